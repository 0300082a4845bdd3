{{/* Names: DNS labels of at most 63 characters. */}}
{{- define "foundry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "foundry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "foundry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "foundry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: foundry
{{- end -}}

{{/* Selector labels for one component (operator, bridge): never change them, Deployments cannot. */}}
{{- define "foundry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "foundry.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "foundry.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where runs live (and the Roles go). */}}
{{- define "foundry.runNamespace" -}}
{{- default .Release.Namespace .Values.runNamespace -}}
{{- end -}}

{{/* Where agent Jobs run: config.agent.namespace, else runNamespace. */}}
{{- define "foundry.agentNamespace" -}}
{{- $agent := (.Values.config | default dict).agent | default dict -}}
{{- default (include "foundry.runNamespace" .) $agent.namespace -}}
{{- end -}}

{{- define "foundry.agentServiceAccount" -}}
{{- if .Values.serviceAccounts.agent.create -}}
{{- default (printf "%s-agent" (include "foundry.fullname" .)) .Values.serviceAccounts.agent.name -}}
{{- else -}}
{{- .Values.serviceAccounts.agent.name -}}
{{- end -}}
{{- end -}}

{{/* The config file's content: .Values.config, with agent.service_account set to the chart's agent ServiceAccount unless given. */}}
{{- define "foundry.configFile" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $agent := get $config "agent" | default dict -}}
{{- if and .Values.serviceAccounts.agent.create (not (hasKey $agent "service_account")) -}}
{{- $_ := set $agent "service_account" (include "foundry.agentServiceAccount" .) -}}
{{- $_ := set $config "agent" $agent -}}
{{- end -}}
{{- $operator := get $config "operator" | default dict -}}
{{- if not (hasKey $operator "leader_election") -}}
{{- $le := .Values.operator.leaderElection -}}
{{- $_ := set $operator "leader_election" (dict "enabled" $le.enabled "lease_duration_seconds" $le.leaseDurationSeconds "renew_deadline_seconds" $le.renewDeadlineSeconds "retry_period_seconds" $le.retryPeriodSeconds) -}}
{{- $_ := set $config "operator" $operator -}}
{{- end -}}
{{- if $config -}}
{{- toYaml $config -}}
{{- end -}}
{{- end -}}

{{- define "foundry.secretName" -}}
{{- default (printf "%s-secrets" (include "foundry.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "foundry.operatorServiceAccount" -}}
{{- if .Values.serviceAccounts.operator.create -}}
{{- default (printf "%s-operator" (include "foundry.fullname" .)) .Values.serviceAccounts.operator.name -}}
{{- else -}}
{{- required "serviceAccounts.operator.name is required when serviceAccounts.operator.create is false" .Values.serviceAccounts.operator.name -}}
{{- end -}}
{{- end -}}

{{- define "foundry.bridgeServiceAccount" -}}
{{- if .Values.serviceAccounts.bridge.create -}}
{{- default (printf "%s-bridge" (include "foundry.fullname" .)) .Values.serviceAccounts.bridge.name -}}
{{- else -}}
{{- required "serviceAccounts.bridge.name is required when serviceAccounts.bridge.create is false" .Values.serviceAccounts.bridge.name -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes username the bridge authenticates as: the admission policy trusts it for Linear decisions. */}}
{{- define "foundry.bridgeUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "foundry.bridgeServiceAccount" .) -}}
{{- end -}}

{{/* A secret key as an env var; optional keys let a bridge run with only one of the two webhook secrets. */}}
{{- define "foundry.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "foundry.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* The environment every Foundry process gets: a writable HOME on the read-only root filesystem. */}}
{{- define "foundry.commonEnv" -}}
- name: HOME
  value: /tmp
- name: FOUNDRY_STATE_DIR
  value: /tmp/foundry
- name: PYTHONUNBUFFERED
  value: "1"
{{- end -}}

{{- define "foundry.configChecksum" -}}
{{- include "foundry.configFile" . | sha256sum -}}
{{- end -}}

{{/* Changes when the chart-made Secret's content changes, so pods restart with new credentials. */}}
{{- define "foundry.secretChecksum" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret | sha256sum -}}
{{- else -}}
{{- pick .Values.secrets "databaseUrl" "linearApiKey" "githubToken" "linearWebhookSecret" "githubWebhookSecret" | toJson | sha256sum -}}
{{- end -}}
{{- end -}}
