// Validates the custom resources of rendered Kubernetes manifests (KEDA, VPA, prometheus-
// operator) against the JSON schemas generated from their CRDs (npm @kubernetes-models/*),
// the part `kubernetes-validate` cannot check. Those schemas do not reject unknown keys, so
// every key is also looked up among the property names the package's schemas know (a typo
// like `minReplicaCounts` fails); free-form maps (labels, annotations, trigger metadata) are
// not walked. Usage: node validate-crds.mjs RENDERED.yaml...   Exit 1 on any problem.
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { VerticalPodAutoscaler } from "@kubernetes-models/autoscaler/autoscaling.k8s.io/v1/VerticalPodAutoscaler";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": [ScaledObject, "@kubernetes-models/keda"],
  "autoscaling.k8s.io/v1/VerticalPodAutoscaler": [VerticalPodAutoscaler, "@kubernetes-models/autoscaler"],
  "monitoring.coreos.com/v1/PodMonitor": [PodMonitor, "@kubernetes-models/prometheus-operator"],
  "monitoring.coreos.com/v1/PrometheusRule": [PrometheusRule, "@kubernetes-models/prometheus-operator"],
  "monitoring.coreos.com/v1/ServiceMonitor": [ServiceMonitor, "@kubernetes-models/prometheus-operator"],
};
// Maps whose keys are the user's, not the schema's.
const FREE_FORM = new Set(["labels", "annotations", "matchLabels", "metadata"]);

const require = createRequire(import.meta.url);
const knownKeys = new Map();

// Core types (label selectors, HPA behaviour) come from the Kubernetes models the package uses.
const CORE = ["kubernetes-models", "@kubernetes-models/apimachinery"];

function keysOf(pkg) {
  if (!knownKeys.has(pkg)) {
    const keys = new Set();
    for (const source of [pkg, ...CORE]) {
      const schemas = join(dirname(require.resolve(`${source}/package.json`)), "_schemas");
      for (const file of readdirSync(schemas)) {
        const code = readFileSync(join(schemas, file), "utf8");
        for (const m of code.matchAll(/data\.([A-Za-z_$][\w$]*)|"([A-Za-z_$][\w$-]*)"/g)) {
          keys.add(m[1] ?? m[2]);
        }
      }
    }
    knownKeys.set(pkg, keys);
  }
  return knownKeys.get(pkg);
}

function unknownKeys(value, keys, path, out) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => unknownKeys(item, keys, `${path}[${i}]`, out));
  } else if (value !== null && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) {
      if (!keys.has(key)) out.push(`${path}.${key}: not a field of this resource`);
      else if (!FREE_FORM.has(key)) unknownKeys(child, keys, `${path}.${key}`, out);
    }
  }
}

let problems = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    if (!object) continue;
    const entry = MODELS[`${object.apiVersion}/${object.kind}`];
    if (!entry) continue;
    const [Model, pkg] = entry;
    const name = `${file}: ${object.kind}/${object.metadata?.name}`;
    const found = [];
    try {
      new Model(object).validate();
    } catch (error) {
      found.push(error.message);
    }
    const { apiVersion, kind, metadata, ...rest } = object;
    unknownKeys(rest, keysOf(pkg), "", found);
    checked += 1;
    for (const message of found) {
      console.error(`FAIL ${name}: ${message}`);
      problems += 1;
    }
  }
}
if (checked === 0) {
  console.error("no KEDA, VPA or prometheus-operator resource found");
  process.exit(1);
}
console.log(`${checked} custom resources checked against their CRD schemas, ${problems} problems`);
process.exit(problems ? 1 : 0);
