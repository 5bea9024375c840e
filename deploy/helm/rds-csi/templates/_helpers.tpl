{{/* Name of every object: the release name, or release-chart when it lacks the chart name. */}}
{{- define "rds-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object (no Helm-only labels: the kustomize base is this output). */}}
{{- define "rds-csi.labels" -}}
app.kubernetes.io/name: rds-csi
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rds-csi
{{- end -}}

{{- define "rds-csi.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* The socket the kubelet reaches the node plugin on. */}}
{{- define "rds-csi.pluginDir" -}}
{{ .Values.kubeletDir }}/plugins/{{ .Values.driverName }}
{{- end -}}
