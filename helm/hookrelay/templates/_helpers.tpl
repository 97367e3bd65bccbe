{{/* Expand the name of the chart. */}}
{{- define "hookrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters (DNS names).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "hookrelay.fullname" -}}
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

{{/* Chart name and version, as used by the chart label. */}}
{{- define "hookrelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels */}}
{{- define "hookrelay.labels" -}}
helm.sh/chart: {{ include "hookrelay.chart" . }}
{{ include "hookrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels */}}
{{- define "hookrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The name of the service account to use */}}
{{- define "hookrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookrelay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The relay image: by digest when one is given, else by tag (default: appVersion). */}}
{{- define "hookrelay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Envoy image, same rule. */}}
{{- define "hookrelay.envoyImage" -}}
{{- if .Values.envoy.image.digest }}
{{- printf "%s@%s" .Values.envoy.image.repository .Values.envoy.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.envoy.image.repository .Values.envoy.image.tag }}
{{- end }}
{{- end }}

{{/* The restricted container security context every container runs with. */}}
{{- define "hookrelay.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The restricted pod security context. */}}
{{- define "hookrelay.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* DATABASE_URL from the referenced secret; required. */}}
{{- define "hookrelay.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: the name of a Secret holding DATABASE_URL" .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end }}

{{/* The public URL: publicUrl, or https://<ingress.host>. */}}
{{- define "hookrelay.publicUrl" -}}
{{- .Values.publicUrl | default (printf "https://%s" .Values.ingress.host) | trimSuffix "/" }}
{{- end }}

{{/* Whether Envoy serves TLS on the pod port: behind Google's load balancer with HTTP/2. */}}
{{- define "hookrelay.backendTls" -}}
{{- if or .Values.gke.loadBalancer.enabled .Values.gke.gateway.enabled }}true{{ end }}
{{- end }}

{{/* The load balancer's backend timeout, seconds (0: none in front). */}}
{{- define "hookrelay.lbTimeoutSec" -}}
{{- if .Values.gke.loadBalancer.enabled }}{{ .Values.gke.loadBalancer.timeoutSec }}
{{- else if .Values.gke.gateway.enabled }}{{ .Values.gke.gateway.timeoutSec }}
{{- else }}0{{ end }}
{{- end }}

{{/* The Secret holding the certificate Envoy serves to the load balancer. */}}
{{- define "hookrelay.backendTlsSecret" -}}
{{- .Values.gke.backendTls.existingSecret | default (printf "%s-backend-tls" (include "hookrelay.fullname" .)) }}
{{- end }}

{{/* The Envoy config file in the chart: TLS on the pod port, or not. */}}
{{- define "hookrelay.envoyFile" -}}
{{- if include "hookrelay.backendTls" . }}files/envoy-tls.json{{ else }}files/envoy.json{{ end }}
{{- end }}

{{/*
The relay's HOOKRELAY_TRUSTED_PROXIES: Envoy on loopback; behind Google's load
balancer (Ingress or Gateway) also Google's front ends and the balancer's address.
*/}}
{{- define "hookrelay.trustedProxies" -}}
{{- $proxies := list "127.0.0.1" "::1" -}}
{{- if or .Values.gke.loadBalancer.enabled .Values.gke.gateway.enabled -}}
{{- $proxies = concat $proxies (list "35.191.0.0/16" "130.211.0.0/22") -}}
{{- with .Values.gke.loadBalancerAddress -}}
{{- $proxies = append $proxies . -}}
{{- end -}}
{{- end -}}
{{- join "," $proxies -}}
{{- end -}}
