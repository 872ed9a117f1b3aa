{{/* The chart name, or nameOverride. */}}
{{- define "wxphone.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: fullnameOverride, or release-name[-chart]. */}}
{{- define "wxphone.fullname" -}}
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

{{- define "wxphone.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wxphone.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wxphone.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wxphone.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wxphone.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wxphone.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wxphone.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Where the Secret's files are mounted. */}}
{{- define "wxphone.secretDir" -}}/run/secrets/wxphone{{- end }}

{{/* The port /metrics is scraped on: "admin" or "http". */}}
{{- define "wxphone.metricsPort" -}}
{{- if gt (int .Values.metrics.adminPort) 0 }}admin{{ else }}http{{ end }}
{{- end }}

{{/*
The apps file (WXPHONE_APPS_FILE): each app's AppSecret is read from its
mounted secret file, never from values.
*/}}
{{- define "wxphone.appsFile" -}}
{{- $apps := list }}
{{- range .Values.apps }}
{{- $apps = append $apps (dict "appid" .appid "secret_file" (printf "%s/%s" (include "wxphone.secretDir" $) .secretKey)) }}
{{- end }}
{{- dict "apps" $apps | toPrettyJson }}
{{- end }}

{{/* Refuses values that would deploy something unsafe or broken. */}}
{{- define "wxphone.validate" -}}
{{- if not .Values.apps }}
{{- fail "apps: list at least one Mini Program (appid and secretKey)" }}
{{- end }}
{{- range .Values.apps }}
{{- if not (and .appid .secretKey) }}
{{- fail "apps: every entry needs appid and secretKey (the key of its AppSecret in the Secret secret.name)" }}
{{- end }}
{{- if not (regexMatch "^[A-Za-z0-9_-]{1,64}$" .appid) }}
{{- fail (printf "apps: appid %q: want 1..64 characters of [A-Za-z0-9_-]" .appid) }}
{{- end }}
{{- end }}
{{- if not .Values.secret.keys.apiKeys }}
{{- fail "secret.keys.apiKeys is required: wxphone serve refuses to start without an API key" }}
{{- end }}
{{- if and (not .Values.redis.enabled) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs redis.enabled: independent replicas would send a retried code to WeChat again" }}
{{- end }}
{{- if and .Values.redis.enabled (not .Values.secret.keys.dataKey) }}
{{- fail "redis.enabled needs secret.keys.dataKey: every replica must seal and find shared data with the same WXPHONE_DATA_KEY" }}
{{- end }}
{{- if and .Values.redis.enabled (not .Values.secret.keys.redisURL) }}
{{- fail "redis.enabled needs secret.keys.redisURL: the key of the Redis URL in the Secret" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.minReplicas) 1) }}
{{- fail "autoscaling.minReplicas must be at least 1" }}
{{- end }}
{{- end }}
