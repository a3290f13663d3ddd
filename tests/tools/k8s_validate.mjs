// k8s_validate.mjs — validates rendered Kubernetes objects offline against
// the schemas shipped in the npm packages kubernetes-models (core API groups),
// @kubernetes-models/keda (ScaledObject, TriggerAuthentication) and
// @kubernetes-models/cert-manager (Certificate).
//
//   node tests/tools/k8s_validate.mjs FILE.yaml...
//
// Prints one JSON line per object: {"file","kind","name","status","error"}
// with status "valid", "invalid" or "unknown" (no model for its apiVersion /
// kind: the caller validates those otherwise, e.g. Strimzi resources).
// Exits 1 when any object is invalid, 2 on a usage or parse error.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// apiVersion "group/version" or "version" (core) -> module path of its models.
function modulePath(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  if (!/^[A-Za-z0-9]+$/.test(kind) || !/^[a-z0-9]+$/.test(version) || !/^[a-z0-9.-]*$/.test(group))
    return null;
  if (group === "keda.sh" || group === "eventing.keda.sh")
    return `@kubernetes-models/keda/${group}/${version}/${kind}`;
  if (group === "cert-manager.io")
    return `@kubernetes-models/cert-manager/${group}/${version}/${kind}`;
  if (group === "")
    return `kubernetes-models/${version}/${kind}`;
  // Core groups without a dot ("apps", "batch", "policy", "autoscaling") and
  // the *.k8s.io ones live in kubernetes-models; any other group is a CRD.
  if (!group.includes(".") || group.endsWith(".k8s.io"))
    return `kubernetes-models/${group}/${version}/${kind}`;
  return null;
}

async function loadModel(apiVersion, kind) {
  const path = modulePath(apiVersion, kind);
  if (!path)
    return null;
  try {
    const mod = await import(path);
    return mod[kind] ?? null;
  } catch (e) {
    if (e && (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED"))
      return null;
    throw e;
  }
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node k8s_validate.mjs FILE.yaml...");
  process.exit(2);
}
let invalid = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.error(`${file}: YAML error: ${doc.errors[0].message}`);
      process.exit(2);
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined)
      continue;
    const kind = obj.kind ?? "";
    const name = obj.metadata?.name ?? "";
    const line = { file, apiVersion: obj.apiVersion ?? "", kind, name };
    if (typeof obj.apiVersion !== "string" || typeof kind !== "string" || !name) {
      console.log(JSON.stringify({ ...line, status: "invalid", error: "apiVersion, kind and metadata.name are required" }));
      invalid++;
      continue;
    }
    // kustomize 4+ wraps long base64 Secret data over several lines; the API
    // server's decoder (Go encoding/base64) skips CR and LF, so do the same.
    if (kind === "Secret" && obj.data && typeof obj.data === "object")
      for (const k of Object.keys(obj.data))
        if (typeof obj.data[k] === "string")
          obj.data[k] = obj.data[k].replace(/[\r\n]/g, "");
    const Model = await loadModel(obj.apiVersion, kind);
    if (!Model) {
      console.log(JSON.stringify({ ...line, status: "unknown" }));
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(JSON.stringify({ ...line, status: "valid" }));
    } catch (e) {
      console.log(JSON.stringify({ ...line, status: "invalid", error: String(e && e.message ? e.message : e) }));
      invalid++;
    }
  }
}
process.exit(invalid ? 1 : 0);
