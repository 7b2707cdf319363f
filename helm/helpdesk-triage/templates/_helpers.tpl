{{/*
Names. Kubernetes object names are DNS labels (63 characters at most); the
poller StatefulSet's name is cut to 52 because its controller-revision-hash
label appends 11 characters to it.
*/}}
{{- define "helpdesk-triage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "helpdesk-triage.fullname" -}}
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

{{- define "helpdesk-triage.pollerName" -}}
{{- printf "%s-poller" (include "helpdesk-triage.fullname" . | trunc 45 | trimSuffix "-") }}
{{- end }}

{{- define "helpdesk-triage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels. The selector labels are shared by both workloads, so the
NetworkPolicy and the ServiceMonitor cover the webhook pods and the poller
pods alike; app.kubernetes.io/component tells them apart.
*/}}
{{- define "helpdesk-triage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "helpdesk-triage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "helpdesk-triage.labels" -}}
helm.sh/chart: {{ include "helpdesk-triage.chart" . }}
{{ include "helpdesk-triage.selectorLabels" . }}
app.kubernetes.io/version: {{ include "helpdesk-triage.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: helpdesk-triage
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "helpdesk-triage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "helpdesk-triage.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "helpdesk-triage.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* A digest, when given, pins the image; the tag then only documents it. */}}
{{- define "helpdesk-triage.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "helpdesk-triage.imageTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "helpdesk-triage.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Settings the chart wires into the pod spec are read from the free `config`
map, so each has exactly one place to be set. The defaults repeat those of
the service's settings.
*/}}
{{- define "helpdesk-triage.port" -}}
{{- dig "server" "port" 8080 .Values.config | int }}
{{- end }}

{{- define "helpdesk-triage.drainSeconds" -}}
{{- dig "server" "drain_seconds" 20 .Values.config | ceil | int }}
{{- end }}

{{- define "helpdesk-triage.pollingEnabled" -}}
{{- if dig "ingest" "poll" true .Values.config }}true{{ end }}
{{- end }}

{{- define "helpdesk-triage.secretName" -}}
{{- default (include "helpdesk-triage.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "helpdesk-triage.configPath" -}}
/etc/helpdesk-triage/config.yaml
{{- end }}

{{/*
Chart-level consistency checks, included once by the ConfigMap (which every
release renders). Each failure says which value to change.
*/}}
{{- define "helpdesk-triage.validate" -}}
{{- $drain := include "helpdesk-triage.drainSeconds" . | int }}
{{- $budget := add $drain .Values.shutdown.preStopSleepSeconds 5 | int }}
{{- if lt (int .Values.shutdown.terminationGracePeriodSeconds) $budget }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + config.server.drain_seconds + 5 (%d), or Kubernetes kills pods before in-flight tickets are finished" (int .Values.shutdown.terminationGracePeriodSeconds) $budget) }}
{{- end }}
{{- range $section := list "zammad" "znuny" "rt" }}
{{- range $field := list "token" "password" "webhook_secret" }}
{{- if dig $section $field "" $.Values.config }}
{{- fail (printf "config.%s.%s is a secret and would land in a ConfigMap: put it in a Secret and list it under secrets.keys" $section $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not .Values.poller.enabled) (include "helpdesk-triage.pollingEnabled" .) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "with poller.enabled=false every webhook replica would poll the whole helpdesk: keep one replica without autoscaling, enable the poller, or set config.ingest.poll=false" }}
{{- end }}
{{- if and .Values.poller.enabled (not (include "helpdesk-triage.pollingEnabled" .)) }}
{{- fail "config.ingest.poll=false turns polling off, so the poller has nothing to do: set poller.enabled=false" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) .Values.secrets.keys }}
{{- range $setting, $key := .Values.secrets.keys }}
{{- if not (hasKey $.Values.secrets.values $key) }}
{{- fail (printf "secrets.keys.%s names key %q, which secrets.values does not have (or set secrets.existingSecret)" $setting $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not (dig "ingest" "webhooks" true .Values.config)) }}
{{- fail "ingress.enabled publishes the webhook endpoints, but config.ingest.webhooks=false turns them off" }}
{{- end }}
{{- range $path := list "server.host" "model.path" "ingest.shard_count" "ingest.shard_index" }}
{{- $parts := splitList "." $path }}
{{- if hasKey (get $.Values.config (first $parts) | default dict) (last $parts) }}
{{- fail (printf "config.%s is set by the image or the chart through the environment, which wins over the config file: remove it (use extraEnv to override the image's default)" $path) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod template shared by the webhook Deployment and the poller StatefulSet.
Called with a dict: root (the chart context), component, env (extra
component-specific variables) and resources.
*/}}
{{- define "helpdesk-triage.podTemplate" -}}
{{- $root := .root }}
{{- with $root -}}
metadata:
  labels:
    {{- include "helpdesk-triage.labels" . | nindent 4 }}
    app.kubernetes.io/component: {{ $.component }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed config or chart-created Secret rolls the pods: the service reads both only at start.
    checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if and .Values.secrets.values (not .Values.secrets.existingSecret) }}
    checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "helpdesk-triage.serviceAccountName" . }}
  # The service never talks to the Kubernetes API.
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.shutdown.terminationGracePeriodSeconds }}
  {{- with .Values.image.pullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: triage
      image: {{ include "helpdesk-triage.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run"]
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ include "helpdesk-triage.port" . }}
          protocol: TCP
      env:
        - name: TRIAGE_CONFIG_FILE
          value: {{ include "helpdesk-triage.configPath" . | quote }}
        {{- range $setting, $key := .Values.secrets.keys }}
        - name: {{ printf "TRIAGE_%s_FILE" ($setting | upper | replace "." "__") }}
          value: {{ printf "%s/%s" $root.Values.secrets.mountPath $key | quote }}
        {{- end }}
        {{- with $.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      {{- if gt (int .Values.shutdown.preStopSleepSeconds) 0 }}
      lifecycle:
        # Keep serving while the endpoint removal reaches every node; SIGTERM
        # (readiness off, intake stopped, in-flight tickets drained) follows.
        preStop:
          exec:
            command: ["sleep", {{ .Values.shutdown.preStopSleepSeconds | quote }}]
      {{- end }}
      resources:
        {{- toYaml $.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "helpdesk-triage.configPath" . | dir }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if .Values.secrets.keys }}
        - name: secrets
          mountPath: {{ .Values.secrets.mountPath }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "helpdesk-triage.fullname" . }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
    {{- if .Values.secrets.keys }}
    - name: secrets
      secret:
        secretName: {{ include "helpdesk-triage.secretName" . }}
        # Readable by the pod's fsGroup only; a listed key missing from the Secret stops the pod from starting.
        defaultMode: 0440
        items:
          {{- range $key := .Values.secrets.keys | values | uniq | sortAlpha }}
          - key: {{ $key }}
            path: {{ $key }}
          {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  {{- $matchLabels := include "helpdesk-triage.selectorLabels" . | fromYaml }}
  {{- $_ := set $matchLabels "app.kubernetes.io/component" $.component }}
  {{- $constraints := list }}
  {{- range .Values.topologySpreadConstraints }}
  {{- $constraints = append $constraints (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $matchLabels))) }}
  {{- end }}
  # Spread each workload on its own: a constraint without a labelSelector gets this one.
  topologySpreadConstraints:
    {{- toYaml $constraints | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
