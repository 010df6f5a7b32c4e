{{/* Chart name, truncated to the 63 characters a label value may have. */}}
{{- define "oauth-token-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed to the chart name unless it already contains it. */}}
{{- define "oauth-token-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "oauth-token-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oauth-token-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oauth-token-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oauth-token-operator.labels" -}}
helm.sh/chart: {{ include "oauth-token-operator.chart" . }}
{{ include "oauth-token-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "oauth-token-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oauth-token-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oauth-token-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "oauth-token-operator.leaseName" -}}
{{- default (include "oauth-token-operator.fullname" .) .Values.operator.leaseName }}
{{- end }}

{{/*
The namespaces operator.watchNamespaces confines the operator to, as a JSON list without repeats
(empty: every namespace). RBAC follows it: Roles in these namespaces instead of a ClusterRole. A name
that is not a namespace name is refused here rather than left to a Role the API server would reject.
*/}}
{{- define "oauth-token-operator.watchNamespaces" -}}
{{- if .Values.operator.watchNamespace }}
{{- fail "operator.watchNamespace was renamed: set operator.watchNamespaces, a list of namespaces" }}
{{- end }}
{{- $namespaces := list }}
{{- range .Values.operator.watchNamespaces }}
{{- $name := toString . }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $name) }}
{{- fail (printf "operator.watchNamespaces: %q is not a namespace name (lower-case letters, digits and '-', at most 63)" $name) }}
{{- end }}
{{- $namespaces = append $namespaces $name }}
{{- end }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/* The RBAC rules shared with the integration tests: files/rbac-rules.yaml. */}}
{{- define "oauth-token-operator.rbacRules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml }}
{{- if hasKey $rules "Error" }}
{{- fail (printf "files/rbac-rules.yaml: %s" $rules.Error) }}
{{- end }}
{{- toJson $rules }}
{{- end }}

{{/* A Prometheus duration (30m, 1h, 90s, 1h30m) in whole seconds, for arithmetic in expressions. */}}
{{- define "oauth-token-operator.seconds" -}}
{{- $total := 0 }}
{{- $rest := toString . }}
{{- range $part := regexFindAll "[0-9]+(ms|[smhdwy])" $rest -1 }}
{{- $n := regexFind "^[0-9]+" $part | int64 }}
{{- $unit := regexFind "(ms|[smhdwy])$" $part }}
{{- $mult := get (dict "ms" 0 "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 "y" 31536000) $unit }}
{{- $total = add $total (mul $n $mult) }}
{{- end }}
{{- if not (regexMatch "^([0-9]+(ms|[smhdwy]))+$" $rest) }}
{{- fail (printf "not a Prometheus duration: %q" $rest) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* A Go duration as the operator parses it (90s, 1h30m, 1.5m, 250ms) in seconds, possibly fractional. */}}
{{- define "oauth-token-operator.goDurationSeconds" -}}
{{- $text := toString . }}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$" $text) }}
{{- fail (printf "not a duration such as 20s or 1m30s: %q" $text) }}
{{- end }}
{{- $total := 0.0 }}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h)" $text -1 }}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" $part | float64 }}
{{- $unit := regexFind "(ms|s|m|h)$" $part }}
{{- $mult := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0) $unit }}
{{- $total = addf $total (mulf $n $mult) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
operator.drainTimeout, refused unless it is shorter than terminationGracePeriodSeconds: the leader
keeps its Lease while reconciles in flight finish, and releases it only afterwards. A kubelet that
kills the pod first leaves the Lease held until it expires, and an aborted refresh in doubt.
*/}}
{{- define "oauth-token-operator.drainTimeout" -}}
{{- $drain := include "oauth-token-operator.goDurationSeconds" .Values.operator.drainTimeout | float64 }}
{{- $grace := .Values.terminationGracePeriodSeconds | float64 }}
{{- if le $drain 0.0 }}
{{- fail (printf "operator.drainTimeout (%s) must be greater than zero" (toString .Values.operator.drainTimeout)) }}
{{- end }}
{{- if ge $drain $grace }}
{{- fail (printf "operator.drainTimeout (%s) must be shorter than terminationGracePeriodSeconds (%v s), with room to release the Lease afterwards" (toString .Values.operator.drainTimeout) .Values.terminationGracePeriodSeconds) }}
{{- end }}
{{- .Values.operator.drainTimeout }}
{{- end }}
