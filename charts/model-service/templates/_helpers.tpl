{{/*
Helpers, namespaced by what they are about (as bitnami's common chart does). Each says how to use it.
*/}}

{{/*
mlctl.names.name: the chart's name part.
Usage: {{ include "mlctl.names.name" . }}
*/}}
{{- define "mlctl.names.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
mlctl.names.fullname: the name of every resource: the release name (mlctl names releases after services).
Usage: {{ include "mlctl.names.fullname" . }}
*/}}
{{- define "mlctl.names.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
mlctl.names.serviceAccount: the ServiceAccount the pods run as.
Usage: {{ include "mlctl.names.serviceAccount" . }}
*/}}
{{- define "mlctl.names.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlctl.names.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
mlctl.labels.standard: the recommended app.kubernetes.io labels, for metadata.
Usage: labels: {{- include "mlctl.labels.standard" . | nindent 4 }}
*/}}
{{- define "mlctl.labels.standard" -}}
app.kubernetes.io/name: {{ include "mlctl.names.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: {{ include "mlctl.names.fullname" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
mlctl.labels.matchLabels: the immutable subset used by selectors.
Usage: matchLabels: {{- include "mlctl.labels.matchLabels" . | nindent 6 }}
*/}}
{{- define "mlctl.labels.matchLabels" -}}
app.kubernetes.io/name: {{ include "mlctl.names.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
mlctl.images.reference: repository:tag@digest (by digest whenever one is given; tags are mutable).
Usage: image: {{ include "mlctl.images.reference" . }}
*/}}
{{- define "mlctl.images.reference" -}}
{{- $ref := .Values.image.repository -}}
{{- if .Values.image.tag -}}{{- $ref = printf "%s:%s" $ref .Values.image.tag -}}{{- end -}}
{{- if .Values.image.digest -}}{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/*
mlctl.gpu.enabled: "true" when replicas request GPUs.
Usage: {{ if eq (include "mlctl.gpu.enabled" .) "true" }}
*/}}
{{- define "mlctl.gpu.enabled" -}}
{{- if gt (int .Values.resources.gpu.count) 0 -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
mlctl.gpu.affinity: required node affinity on the GPU product (GPU Feature Discovery labels) and on the
driver floor the image's CUDA needs. Empty when neither applies.
Usage: {{- include "mlctl.gpu.affinity" . | nindent 6 }}
*/}}
{{- define "mlctl.gpu.affinity" -}}
{{- $gpu := .Values.resources.gpu -}}
{{- if and (gt (int $gpu.count) 0) (or $gpu.products (gt (int $gpu.minDriverMajor) 0)) -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          {{- if $gpu.products }}
          - key: nvidia.com/gpu.product
            operator: In
            values:
              {{- range $gpu.products }}
              - {{ . | quote }}
              {{- end }}
          {{- end }}
          {{- if gt (int $gpu.minDriverMajor) 0 }}
          - key: nvidia.com/cuda.driver.major
            operator: Gt
            values:
              - {{ sub (int $gpu.minDriverMajor) 1 | quote }}
          {{- end }}
{{- end -}}
{{- end -}}

{{/*
mlctl.gpu.tolerations: the nvidia.com/gpu taint GPU node pools carry (GKE adds this toleration itself,
AKS does not), then any extra tolerations.
Usage: {{- include "mlctl.gpu.tolerations" . | nindent 8 }}
*/}}
{{- define "mlctl.gpu.tolerations" -}}
{{- if and (eq (include "mlctl.gpu.enabled" .) "true") .Values.resources.gpu.tolerateGpuTaint }}
- key: nvidia.com/gpu
  operator: Exists
  effect: NoSchedule
{{- end }}
{{- with .Values.tolerations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
mlctl.metrics.port: the port Prometheus scrapes /metrics on: metrics.port, or the serving port while the
server has no metrics port of its own.
Usage: port: {{ include "mlctl.metrics.port" . }}
*/}}
{{- define "mlctl.metrics.port" -}}
{{- if gt (int .Values.metrics.port) 0 -}}{{- .Values.metrics.port -}}{{- else -}}{{- .Values.serving.port -}}{{- end -}}
{{- end -}}

{{/*
mlctl.security.waivers: checkov's skip annotations for the Deployment: each deviation from its checks
that this chart makes on purpose, with the reason. Every other check passes on every rendered chart
(tests/test_chart.py runs checkov and counts).
Usage: annotations: {{- include "mlctl.security.waivers" . | nindent 4 }}
*/}}
{{- define "mlctl.security.waivers" -}}
checkov.io/skip1: "CKV_K8S_11=No CPU limit on purpose: CFS throttling stalls inference mid-request and adds tail latency; CPU is requested, memory and GPUs are limited"
{{- if not .Values.networkPolicy.enabled }}
checkov.io/skip2: "CKV2_K8S_6=The NetworkPolicy is opt-in (networkPolicy.enabled): who may call a model is site-specific, and many clusters run no policy controller"
{{- end }}
{{- if .Values.serviceAccount.automountToken }}
checkov.io/skip3: "CKV_K8S_38=The service account token is mounted because serviceAccount.automountToken asks for it"
{{- end }}
{{- end -}}

{{/*
mlctl.rollout.progressDeadline: at least the image pull plus the start-up budget, and never under 600 s
(large models miss the usual 10-minute defaults).
Usage: progressDeadlineSeconds: {{ include "mlctl.rollout.progressDeadline" . }}
*/}}
{{- define "mlctl.rollout.progressDeadline" -}}
{{- if gt (int .Values.progressDeadlineSeconds) 0 -}}
{{- .Values.progressDeadlineSeconds -}}
{{- else -}}
{{- max 600 (add .Values.imagePullBudgetSeconds .Values.probes.startupBudgetSeconds) -}}
{{- end -}}
{{- end -}}

{{/*
mlctl.rollout.maxSurge / mlctl.rollout.maxUnavailable: the update strategy, from rollout.* (mlctl fills them
from deploy.strategy); unset, a GPU service surges by 0 and lets 1 down, a CPU one the other way round.
Usage: maxSurge: {{ include "mlctl.rollout.maxSurge" . }}
*/}}
{{- define "mlctl.rollout.maxSurge" -}}
{{- $gpu := eq (include "mlctl.gpu.enabled" .) "true" -}}
{{- $value := .Values.rollout.maxSurge -}}
{{- if kindIs "invalid" $value -}}{{- if $gpu -}}0{{- else -}}1{{- end -}}
{{- else if kindIs "string" $value -}}{{- $value | quote -}}
{{- else -}}{{- $value -}}{{- end -}}
{{- end -}}

{{- define "mlctl.rollout.maxUnavailable" -}}
{{- $gpu := eq (include "mlctl.gpu.enabled" .) "true" -}}
{{- $value := .Values.rollout.maxUnavailable -}}
{{- if kindIs "invalid" $value -}}{{- if $gpu -}}1{{- else -}}0{{- end -}}
{{- else if kindIs "string" $value -}}{{- $value | quote -}}
{{- else -}}{{- $value -}}{{- end -}}
{{- end -}}

{{/*
mlctl.serving.drainSeconds: the preStop delay: serving.drainSeconds, else a third of the graceful shutdown
(rounded up), from 2 to 15 s: long enough for endpoints to stop routing to the pod, short next to its grace.
Usage: {{ include "mlctl.serving.drainSeconds" . }}
*/}}
{{- define "mlctl.serving.drainSeconds" -}}
{{- if gt (int .Values.serving.drainSeconds) 0 -}}
{{- int .Values.serving.drainSeconds -}}
{{- else -}}
{{- min 15 (max 2 (div (add (int .Values.serving.gracefulShutdownSeconds) 2) 3)) -}}
{{- end -}}
{{- end -}}

{{/*
mlctl.serving.terminationGrace: terminationGracePeriodSeconds: the preStop delay, the server's graceful
shutdown and 5 s for it to exit, since the kubelet's countdown runs through all of them.
Usage: terminationGracePeriodSeconds: {{ include "mlctl.serving.terminationGrace" . }}
*/}}
{{- define "mlctl.serving.terminationGrace" -}}
{{- add (include "mlctl.serving.drainSeconds" . | int) (int .Values.serving.gracefulShutdownSeconds) 5 -}}
{{- end -}}

{{/*
mlctl.rollout.replicas: the replicas that are meant to run (the HPA's floor when autoscaling).
Usage: {{ include "mlctl.rollout.replicas" . }}
*/}}
{{- define "mlctl.rollout.replicas" -}}
{{- if .Values.autoscaling.enabled -}}{{- .Values.autoscaling.minReplicas -}}{{- else -}}{{- .Values.replicaCount -}}{{- end -}}
{{- end -}}

{{/*
mlctl.validateValues: every problem with the values, all at once, in one failure.
Usage: {{ include "mlctl.validateValues" . }}
*/}}
{{- define "mlctl.validateValues" -}}
{{- $errors := list -}}
{{- if not .Values.image.repository -}}
{{- $errors = append $errors "image.repository: required (the service image, e.g. ghcr.io/acme/fraud-scorer)" -}}
{{- end -}}
{{- if not (or .Values.image.tag .Values.image.digest) -}}
{{- $errors = append $errors "image: set image.digest (preferred) or image.tag" -}}
{{- end -}}
{{- if not .Values.model.name -}}
{{- $errors = append $errors "model.name: required (the name in /v2/models/{name})" -}}
{{- end -}}
{{- if and .Values.resources.gpu.products (eq (int .Values.resources.gpu.count) 0) -}}
{{- $errors = append $errors "resources.gpu.products: GPU products are named but resources.gpu.count is 0" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- $errors = append $errors (printf "autoscaling.minReplicas: %v is above autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- $errors = append $errors "ingress.host: required when ingress.enabled" -}}
{{- end -}}
{{- if eq (int .Values.metrics.port) (int .Values.serving.port) -}}
{{- $errors = append $errors (printf "metrics.port: %v is serving.port too; 0 serves /metrics on the serving port" .Values.metrics.port) -}}
{{- end -}}
{{- $surge := .Values.rollout.maxSurge -}}
{{- $down := .Values.rollout.maxUnavailable -}}
{{- if and (not (kindIs "invalid" $surge)) (not (kindIs "invalid" $down)) (eq (toString $surge | trimSuffix "%") "0") (eq (toString $down | trimSuffix "%") "0") -}}
{{- $errors = append $errors "rollout: maxSurge and maxUnavailable cannot both be 0 (an update could never replace a pod)" -}}
{{- end -}}
{{- if gt (int .Values.serving.gracefulShutdownSeconds) 3000 -}}
{{- $errors = append $errors "serving.gracefulShutdownSeconds: at most 3000" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\nmodel-service values are invalid:\n  - %s" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
