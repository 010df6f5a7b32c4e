// npm itself may run on the machine's older Node; scripts must run on the Node 24 that the
// package installs (node_modules/.bin/node comes first on the PATH npm gives scripts).
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(
    `Node ${process.versions.node} is running the scripts; expected Node 24 from the 'node' package. Run npm ci.`,
  );
  process.exit(1);
}
console.log(`scripts run on Node ${process.versions.node}`);
