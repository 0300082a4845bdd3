{{/*
Which database the release uses, and where its URL comes from.

  external  externalDatabase.url, externalDatabase.existingSecret, or the older
            spelling secrets.databaseUrl (kept so 0.1.0 values upgrade unchanged)
  bundled   none of those and postgresql.enabled: the chart's own PostgreSQL
            StatefulSet, its URL in the Secret <fullname>-database

docs/decisions/0006-chart-bundled-postgres.md explains the migration ordering.
*/}}

{{- define "foundry.db.external" -}}
{{- $e := .Values.externalDatabase -}}
{{- if or $e.url $e.existingSecret .Values.secrets.databaseUrl -}}true{{- end -}}
{{- end -}}

{{- define "foundry.db.bundled" -}}
{{- if and (not (include "foundry.db.external" .)) .Values.postgresql.enabled -}}true{{- end -}}
{{- end -}}

{{/* Refuse, at render time, a release with no database at all (the schema says the same). */}}
{{- define "foundry.db.check" -}}
{{- if not (or (include "foundry.db.external" .) .Values.postgresql.enabled) -}}
{{- fail "no database: postgresql.enabled is false, so set externalDatabase.url or externalDatabase.existingSecret" -}}
{{- end -}}
{{- /* 0.1.0 read database-url from secrets.existingSecret. Never switch such a release to an empty
bundled database in silence: say how to keep the old one. (A lookup: only when a cluster is asked.) */ -}}
{{- if and (include "foundry.db.bundled" .) .Values.secrets.existingSecret -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace .Values.secrets.existingSecret -}}
{{- if and $old (hasKey ($old.data | default dict) "database-url") -}}
{{- fail (printf "secrets.existingSecret %s holds database-url, but the database is now chosen by externalDatabase: set externalDatabase.existingSecret=%s to keep using that database (or remove the key to use the bundled PostgreSQL)" .Values.secrets.existingSecret .Values.secrets.existingSecret) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "foundry.db.fullname" -}}
{{- printf "%s-postgresql" (include "foundry.fullname" .) -}}
{{- end -}}

{{/* The Secret (name) and key that hold the database URL the pods read. */}}
{{- define "foundry.db.secretName" -}}
{{- $e := .Values.externalDatabase -}}
{{- if $e.existingSecret -}}
{{- $e.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "foundry.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "foundry.db.secretKey" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecretKey | default "database-url" -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{/* The URL given in values (external mode), if any. */}}
{{- define "foundry.db.givenUrl" -}}
{{- .Values.externalDatabase.url | default .Values.secrets.databaseUrl -}}
{{- end -}}

{{/* The bundled database's password: the one already in the cluster, else a new one.
An upgrade (and a rollback) keeps it: PostgreSQL set it once, at initialisation. */}}
{{- define "foundry.db.password" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "foundry.db.secretName" .) -}}
{{- if and $existing $existing.data (index $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* The pods' FOUNDRY_DATABASE_URL. */}}
{{- define "foundry.db.env" -}}
- name: FOUNDRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "foundry.db.secretName" . }}
      key: {{ include "foundry.db.secretKey" . }}
{{- end -}}

{{/* Changes when the database the pods use changes, so they restart onto it. */}}
{{- define "foundry.db.checksum" -}}
{{- list (include "foundry.db.bundled" .) (include "foundry.db.givenUrl" .) .Values.externalDatabase.existingSecret .Values.externalDatabase.existingSecretKey | toJson | sha256sum -}}
{{- end -}}

{{/*
In bundled mode the database does not exist before the release's objects, so at
install the schema is made by this init container in the operator and bridge
pods (concurrent runs are safe: an advisory lock); upgrades still run the
pre-upgrade hook first. Args: root context.
*/}}
{{- define "foundry.db.migrateInit" -}}
{{- if and (include "foundry.db.bundled" .) .Values.migration.enabled }}
initContainers:
  - name: migrate
    image: {{ include "foundry.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: [db, upgrade, --wait, {{ .Values.migration.waitSeconds | quote }}]
    env:
      {{- include "foundry.commonEnv" . | nindent 6 }}
      {{- include "foundry.db.env" . | nindent 6 }}
    resources:
      {{- toYaml .Values.migration.resources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
{{- end }}
{{- end -}}
