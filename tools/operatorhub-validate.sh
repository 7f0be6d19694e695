#!/usr/bin/env bash
# OperatorHub.io's static checks of one bundle directory, as its pipelines run them: operator-sdk's
# `operatorframework` suite (operatorhubv2, capabilities, categories, deprecated APIs, good
# practices) and the `community` validator, each with the oldest and the newest Kubernetes version
# the operator supports. Any error or warning about the bundle fails; the one warning allowed is
# operator-sdk's notice that the community validator itself is deprecated, which is about the tool.
#
#   tools/operatorhub-validate.sh <bundle dir> <min k8s version> <max k8s version>
set -euo pipefail

usage="usage: tools/operatorhub-validate.sh <bundle dir> <min k8s version> <max k8s version>"
bundle="${1:?$usage}"
min_kube="${2:?$usage}"
max_kube="${3:?$usage}"
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
operator_sdk="$("$tools/build.sh" operator-sdk)/operator-sdk"
tool_notice='The Optional(stage: alpha) Community Operator bundle validator is deprecated'

status=0
for selector in suite=operatorframework name=community; do
  for kube in "$min_kube" "$max_kube"; do
    if ! output="$("$operator_sdk" bundle validate "$bundle" --select-optional "$selector" \
      --optional-values=k8s-version="$kube" 2>&1)"; then
      echo "$output" >&2
      status=1
      continue
    fi
    if grep -iE 'level=(warning|error)' <<<"$output" | grep -vF "$tool_notice" | grep -q .; then
      echo "operatorhub-validate: $bundle, $selector, k8s-version=$kube:" >&2
      echo "$output" >&2
      status=1
    fi
  done
done
exit "$status"
