{{/* Names, labels and the shared pieces of every pod of the chart. */}}

{{- define "klaxon.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "klaxon.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "klaxon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "klaxon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "klaxon.labels" -}}
{{ include "klaxon.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "klaxon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "klaxon.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "klaxon.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The metrics token is required: off loopback the endpoints refuse requests without one. */}}
{{- define "klaxon.metricsToken" -}}
{{- required "metrics.token is required: the kubelet's probes and Prometheus send it to /healthz, /readyz and /metrics" .Values.metrics.token -}}
{{- end -}}

{{- define "klaxon.kafkaSecretName" -}}
{{- .Values.kafka.existingSecret -}}
{{- end -}}

{{/* Where the Kafka Secret is mounted (SASL password and TLS files are read as files). */}}
{{- define "klaxon.kafkaDir" -}}/etc/klaxon/kafka{{- end -}}

{{/* Variables of every container: settings ConfigMap + Kafka credentials + metrics token. */}}
{{- define "klaxon.env" -}}
- name: KLAXON_METRICS_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "klaxon.fullname" . }}-metrics, key: token}
{{- $sasl := hasPrefix "SASL_" .Values.kafka.securityProtocol }}
{{- if and $sasl (not .Values.kafka.existingSecret) }}
{{- fail "kafka.securityProtocol SASL_* needs kafka.existingSecret (with the SASL username and password)" }}
{{- end }}
{{- if $sasl }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.existingSecret }}, key: {{ .Values.kafka.usernameKey }}}
- name: KAFKA_SASL_PASSWORD_FILE
  value: {{ include "klaxon.kafkaDir" . }}/{{ .Values.kafka.passwordKey }}
{{- end }}
{{- with .Values.kafka.caKey }}
- name: KAFKA_SSL_CAFILE
  value: {{ include "klaxon.kafkaDir" $ }}/{{ . }}
{{- end }}
{{- if and .Values.kafka.certKey .Values.kafka.keyKey }}
- name: KAFKA_SSL_CERTFILE
  value: {{ include "klaxon.kafkaDir" . }}/{{ .Values.kafka.certKey }}
- name: KAFKA_SSL_KEYFILE
  value: {{ include "klaxon.kafkaDir" . }}/{{ .Values.kafka.keyKey }}
{{- end }}
{{- end -}}

{{- define "klaxon.envFrom" -}}
- configMapRef: {name: {{ include "klaxon.fullname" . }}-settings}
{{- end -}}

{{- define "klaxon.kafkaVolumeMount" -}}
{{- if .Values.kafka.existingSecret }}
- {name: kafka, mountPath: {{ include "klaxon.kafkaDir" . }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "klaxon.kafkaVolume" -}}
{{- if .Values.kafka.existingSecret }}
- name: kafka
  secret: {secretName: {{ .Values.kafka.existingSecret }}, defaultMode: 0440}
{{- end }}
{{- end -}}

{{/* HTTP probes of /healthz (alive) and /readyz (partitions, broker, not stalled). The
startup probe gives a worker that reads back a large state changelog 5 minutes. */}}
{{- define "klaxon.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
    httpHeaders:
      - {name: Authorization, value: {{ printf "Bearer %s" (include "klaxon.metricsToken" .) | quote }}}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
    httpHeaders:
      - {name: Authorization, value: {{ printf "Bearer %s" (include "klaxon.metricsToken" .) | quote }}}
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 4
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
    httpHeaders:
      - {name: Authorization, value: {{ printf "Bearer %s" (include "klaxon.metricsToken" .) | quote }}}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "klaxon.podSecurity" -}}
serviceAccountName: {{ include "klaxon.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A Prometheus duration (30s, 10m, 1h) in seconds, for comparisons with *_seconds metrics. */}}
{{- define "klaxon.seconds" -}}
{{- $d := toString . -}}
{{- $unit := substr (int (sub (len $d) 1)) (len $d) $d -}}
{{- $n := trimSuffix $unit $d -}}
{{- if eq $unit "s" }}{{ int $n }}{{ else if eq $unit "m" }}{{ mul (int $n) 60 }}{{ else if eq $unit "h" }}{{ mul (int $n) 3600 }}{{ else }}{{ fail (printf "not a duration (30s, 10m, 1h): %s" $d) }}{{ end -}}
{{- end -}}
