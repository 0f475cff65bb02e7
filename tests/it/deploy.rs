//! deploy/: the Kubernetes overlays render and pass the Kubernetes schemas and our hardening
//! rules, the systemd unit passes `systemd-analyze verify`, and the shipped configurations (the
//! systemd environment file, the overlays' `config.toml`) actually start the server.
//!
//! Rendering uses real kustomize (`kubectl kustomize`, or `kustomize build`); schema validation
//! uses the PyPI package `kubernetes-validate` through `deploy/kubernetes/validate.py`, which
//! also hands the parsed documents back as JSON for the property checks here. A missing
//! renderer, python3 or kubernetes-validate skips with the reason, unless `CI` is set: then it
//! fails. `systemd-analyze` is used where it is available.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Spawned, Stderr, client, copy_tree, example_registry};

/// The UID and GID every container runs as (distroless `nonroot`).
pub(crate) const RUN_AS: i64 = 65532;

pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// A required tool is missing: panics under `CI`, otherwise prints why and returns.
pub(crate) fn skip_or_fail(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and {reason}");
    }
    eprintln!("skipping: {reason} (with CI set this fails)");
}

/// `name` on PATH, if it is there.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// (a) Kubernetes: render, validate against the schemas, check the properties
// ---------------------------------------------------------------------------------------------

/// How to render a kustomization here: `kubectl kustomize DIR` or `kustomize build DIR`.
pub(crate) fn kustomize_command() -> Option<Vec<String>> {
    if let Some(kubectl) = on_path("kubectl") {
        let ok = Command::new(&kubectl)
            .args(["kustomize", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(vec![kubectl.display().to_string(), "kustomize".to_owned()]);
        }
    }
    on_path("kustomize").map(|k| vec![k.display().to_string(), "build".to_owned()])
}

/// Renders an overlay of `deploy/kubernetes/overlays/`.
pub(crate) fn render(kustomize: &[String], overlay: &str) -> String {
    let dir = deploy_dir().join("kubernetes/overlays").join(overlay);
    let (code, out, err) = output(Command::new(&kustomize[0]).args(&kustomize[1..]).arg(&dir));
    assert_eq!(code, 0, "rendering {}: {err}", dir.display());
    out
}

/// The rendered overlays, validated: `{"single": [documents], "ha": [documents]}`, or `None`
/// (after saying why) when the tools are missing outside CI.
pub(crate) fn rendered_and_validated() -> Option<BTreeMap<String, Vec<Value>>> {
    let Some(kustomize) = kustomize_command() else {
        skip_or_fail(
            "neither `kubectl kustomize` nor `kustomize` is available to render deploy/kubernetes",
        );
        return None;
    };
    let Some(python) = on_path("python3") else {
        skip_or_fail("python3 is not on PATH (needed for kubernetes-validate)");
        return None;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut args = Vec::new();
    for overlay in ["single", "ha"] {
        let file = tmp.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, render(&kustomize, overlay)).expect("write rendering");
        args.push(format!("{overlay}={}", file.display()));
    }
    let script = deploy_dir().join("kubernetes/validate.py");
    // Against Kubernetes 1.30 (the oldest this deployment supports: preStop `sleep`) and the
    // newest version the installed kubernetes-validate knows.
    let (code, out, err) = output(Command::new(python).arg(&script).args(&args));
    if code == 3 {
        skip_or_fail(&format!(
            "kubernetes-validate cannot run (pip install kubernetes-validate): {err}"
        ));
        return None;
    }
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("validate.py printed no JSON ({e}); exit {code}\n{err}"));
    let mut rendered = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, overlay) in report["overlays"].as_object().expect("overlays") {
        for e in overlay["errors"].as_array().expect("errors") {
            errors.push(e.as_str().unwrap_or_default().to_owned());
        }
        rendered.insert(
            name.clone(),
            overlay["documents"].as_array().expect("documents").clone(),
        );
    }
    assert!(
        errors.is_empty(),
        "manifests do not validate against the Kubernetes schemas:\n{}",
        errors.join("\n")
    );
    assert_eq!(code, 0, "validate.py failed:\n{err}");
    eprintln!("{}", err.trim_end());
    Some(rendered)
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, overlay: &str) -> &'a Value {
    let found = by_kind(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "{overlay}: expected one {kind}, found {}",
        found.len()
    );
    found[0]
}

/// A generated ConfigMap, found by the name before kustomize's hash suffix.
fn config_map<'a>(docs: &'a [Value], name: &str, overlay: &str) -> &'a Value {
    by_kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(name))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
        .unwrap_or_else(|| panic!("{overlay}: no ConfigMap {name}"))
}

fn str_at<'a>(v: &'a Value, pointer: &str, what: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no string at {pointer}"))
}

/// Labels of `selector` (a matchLabels map) are all carried by `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Checks one container's hardening and resources.
fn check_container(c: &Value, overlay: &str) {
    let name = c["name"].as_str().unwrap_or("?");
    let what = format!("{overlay}: container {name}");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
    assert_eq!(sc["runAsUser"], RUN_AS, "{what}: runAsUser");
    assert_eq!(sc["runAsGroup"], RUN_AS, "{what}: runAsGroup");
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "{what}: readOnlyRootFilesystem"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "{what}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc["privileged"],
        Value::Null,
        "{what}: privileged must not be set"
    );
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}: capabilities.drop"
    );
    assert_eq!(
        sc["capabilities"]["add"],
        Value::Null,
        "{what}: no capability is added"
    );
    assert_eq!(
        sc["seccompProfile"]["type"], "RuntimeDefault",
        "{what}: seccompProfile"
    );
    let res = &c["resources"];
    for key in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        assert!(
            res.pointer(key).and_then(Value::as_str).is_some(),
            "{what}: resources{key} is not set"
        );
    }
}

/// What every overlay must have; returns the Deployment.
fn check_common<'a>(docs: &'a [Value], overlay: &str) -> &'a Value {
    let ns = one(docs, "Namespace", overlay);
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "{overlay}: the namespace enforces the restricted Pod Security Standard"
    );

    let deploy = one(docs, "Deployment", overlay);
    let pod = &deploy["spec"]["template"]["spec"];
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert!(
        selects(&deploy["spec"]["selector"]["matchLabels"], pod_labels),
        "{overlay}: the Deployment selects its own pods"
    );

    // No service-account token, no service links, non-root pod.
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{overlay}: pod mounts a token"
    );
    assert_eq!(
        pod["enableServiceLinks"], false,
        "{overlay}: enableServiceLinks"
    );
    let sa_name = str_at(pod, "/serviceAccountName", overlay);
    let sa = by_kind(docs, "ServiceAccount")
        .into_iter()
        .find(|s| s["metadata"]["name"] == sa_name)
        .unwrap_or_else(|| panic!("{overlay}: no ServiceAccount {sa_name}"));
    assert_eq!(
        sa["automountServiceAccountToken"], false,
        "{overlay}: ServiceAccount token"
    );
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"], true,
        "{overlay}: pod runAsNonRoot"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{overlay}: pod seccompProfile"
    );
    assert_eq!(pod["hostNetwork"], Value::Null, "{overlay}: hostNetwork");
    for v in pod["volumes"].as_array().expect("volumes") {
        assert_eq!(
            v["hostPath"],
            Value::Null,
            "{overlay}: hostPath volume {}",
            v["name"]
        );
    }

    let containers = pod["containers"].as_array().expect("containers");
    let init = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in containers.iter().chain(init.iter()) {
        check_container(c, overlay);
    }

    // The server container: probes, port, args, mounts.
    let server = containers
        .iter()
        .find(|c| c["name"] == "gf-registry")
        .unwrap_or_else(|| panic!("{overlay}: no container gf-registry"));
    assert_eq!(
        server["args"],
        serde_json::json!(["serve", "--config", "/etc/gf-registry/config/config.toml"]),
        "{overlay}: server args (the start test runs exactly these)"
    );
    let port = &server["ports"][0];
    assert_eq!(port["containerPort"], 8080, "{overlay}: container port");
    let port_name = str_at(port, "/name", overlay);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &server[probe]["httpGet"];
        assert_eq!(get["path"], path, "{overlay}: {probe} path");
        assert!(
            get["port"] == port_name || get["port"] == 8080,
            "{overlay}: {probe} port {}",
            get["port"]
        );
    }
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    let pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        grace > 30 + pre_stop,
        "{overlay}: terminationGracePeriodSeconds {grace} must exceed the preStop sleep \
         ({pre_stop} s) plus the server's 30 s shutdown timeout"
    );

    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or(""), v))
        .collect();
    let mounts: BTreeMap<&str, &Value> = server["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap_or(""), m))
        .collect();
    let tmp = mounts
        .get("/tmp")
        .unwrap_or_else(|| panic!("{overlay}: nothing writable at /tmp (pull-through spools)"));
    let tmp_volume = volumes[tmp["name"].as_str().expect("name")];
    assert!(
        tmp_volume["emptyDir"].is_object(),
        "{overlay}: /tmp is an emptyDir"
    );

    // Prometheus scrape annotations on the pods.
    let ann = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        ann["prometheus.io/scrape"], "true",
        "{overlay}: prometheus.io/scrape"
    );
    assert_eq!(
        ann["prometheus.io/port"], "8080",
        "{overlay}: prometheus.io/port"
    );
    assert_eq!(
        ann["prometheus.io/path"], "/metrics",
        "{overlay}: prometheus.io/path"
    );

    // The Service reaches the pods' HTTP port.
    let svc = one(docs, "Service", overlay);
    assert!(
        selects(&svc["spec"]["selector"], pod_labels),
        "{overlay}: the Service selects the pods"
    );
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"], port_name,
        "{overlay}: targetPort"
    );

    // The ConfigMaps hold exactly the shipped files, mounted where the config says.
    let config = config_map(docs, "gf-registry-config", overlay);
    let config_text = str_at(config, "/data/config.toml", overlay);
    let on_disk = std::fs::read_to_string(
        deploy_dir()
            .join("kubernetes/overlays")
            .join(overlay)
            .join("config.toml"),
    )
    .expect("overlay config.toml");
    assert_eq!(config_text, on_disk, "{overlay}: rendered config.toml");
    let parsed: toml::Table = toml::from_str(config_text).expect("config.toml parses");
    let listen = parsed["server"]["listen"].as_str().expect("server.listen");
    assert!(
        listen.ends_with(":8080"),
        "{overlay}: server.listen {listen} is not the container port"
    );
    let mount_of = |volume: &str| -> &str {
        mounts
            .iter()
            .find(|(_, m)| m["name"] == volume)
            .map(|(path, _)| *path)
            .unwrap_or_else(|| panic!("{overlay}: volume {volume} is not mounted in the server"))
    };
    let config_volume = volumes
        .values()
        .find(|v| v["configMap"]["name"] == config["metadata"]["name"])
        .unwrap_or_else(|| panic!("{overlay}: the config ConfigMap is not a volume"));
    assert_eq!(
        format!(
            "{}/config.toml",
            mount_of(str_at(config_volume, "/name", overlay))
        ),
        "/etc/gf-registry/config/config.toml",
        "{overlay}: --config points at the mounted config.toml"
    );
    let policy = config_map(docs, "gf-registry-mirror-policy", overlay);
    let policy_volume = volumes
        .values()
        .find(|v| v["configMap"]["name"] == policy["metadata"]["name"])
        .unwrap_or_else(|| panic!("{overlay}: the mirror policy ConfigMap is not a volume"));
    assert_eq!(
        parsed["mirror"]["policy"].as_str(),
        Some(mount_of(str_at(policy_volume, "/name", overlay))),
        "{overlay}: mirror.policy is where the policy ConfigMap is mounted"
    );
    for file in ["policy.toml", "candidates.json"] {
        let shipped = std::fs::read_to_string(repo_root().join("mirror-policy").join(file))
            .expect("mirror-policy file");
        assert_eq!(
            policy["data"][file].as_str(),
            Some(shipped.as_str()),
            "{overlay}: the ConfigMap's {file} differs from mirror-policy/{file}: copy it to \
             deploy/kubernetes/base/mirror-policy/{file}"
        );
    }
    let registry_path = parsed["registry"]["path"].as_str().expect("registry.path");
    let git_mount = mount_of("git");
    assert!(
        registry_path.starts_with(&format!("{git_mount}/")),
        "{overlay}: registry.path {registry_path} is not inside the git-sync volume {git_mount}"
    );
    // The git-sync root must be a folder of its own (owned by the UID it runs as: libgit2
    // refuses a repository owned by another user, and the volume's root belongs to root).
    let sync = config_map(docs, "gf-registry-git-sync", overlay);
    let root = str_at(sync, "/data/GITSYNC_ROOT", overlay);
    assert_eq!(
        root.strip_prefix("/git"),
        registry_path.strip_prefix(git_mount),
        "{overlay}: GITSYNC_ROOT {root} (mounted at /git in git-sync) is registry.path"
    );
    assert_eq!(
        parsed["registry"]["ref"].as_str(),
        Some("refs/heads/git-sync")
    );
    for (path, m) in &mounts {
        let writable = *path == "/tmp"
            || Some(*path)
                == parsed
                    .get("storage")
                    .and_then(|s| s.get("data"))
                    .and_then(|d| d.as_str());
        if !writable {
            assert_eq!(
                m["readOnly"], true,
                "{overlay}: {path} should be mounted read-only"
            );
        }
    }
    deploy
}

#[test]
fn kubernetes_overlays_render_validate_and_are_hardened() {
    let Some(rendered) = rendered_and_validated() else {
        return;
    };

    // single: one replica, data on a PersistentVolumeClaim, replaced not surged.
    let docs = &rendered["single"];
    let deploy = check_common(docs, "single");
    assert_eq!(deploy["spec"]["replicas"], 1, "single: replicas");
    assert_eq!(
        deploy["spec"]["strategy"]["type"], "Recreate",
        "single: strategy"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let config: toml::Table = toml::from_str(str_at(
        config_map(docs, "gf-registry-config", "single"),
        "/data/config.toml",
        "single",
    ))
    .expect("config");
    let data = config["storage"]["data"]
        .as_str()
        .expect("single: storage.data");
    let server = &pod["containers"][0];
    assert_eq!(server["name"], "gf-registry");
    let data_mount = server["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == data)
        .unwrap_or_else(|| panic!("single: nothing mounted at storage.data {data}"));
    let claim = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == data_mount["name"])
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .expect("single: storage.data is on a PersistentVolumeClaim");
    assert!(
        by_kind(docs, "PersistentVolumeClaim")
            .iter()
            .any(|p| p["metadata"]["name"] == claim),
        "single: PersistentVolumeClaim {claim} is not in the overlay"
    );

    // ha: three replicas over S3, a PodDisruptionBudget, anti-affinity across nodes, an Ingress.
    let docs = &rendered["ha"];
    let deploy = check_common(docs, "ha");
    let replicas = deploy["spec"]["replicas"].as_i64().expect("replicas");
    assert_eq!(replicas, 3, "ha: replicas");
    let pod = &deploy["spec"]["template"]["spec"];
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let pdb = one(docs, "PodDisruptionBudget", "ha");
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels),
        "ha: PDB selects the pods"
    );
    let min = pdb["spec"]["minAvailable"]
        .as_i64()
        .expect("ha: PDB minAvailable");
    assert!(
        (1..replicas).contains(&min),
        "ha: PDB minAvailable {min} of {replicas}"
    );
    let anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .expect("ha: required pod anti-affinity");
    assert!(
        anti.iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && selects(&t["labelSelector"]["matchLabels"], pod_labels)),
        "ha: anti-affinity keeps the replicas on different nodes"
    );
    let server = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "gf-registry")
        .expect("server");
    let env_from = server["envFrom"].as_array().expect("ha: envFrom");
    let secret = env_from
        .iter()
        .find_map(|e| e["secretRef"]["name"].as_str())
        .expect("ha: S3 credentials come from a Secret");
    assert_eq!(secret, "gf-registry-s3-credentials");
    let s3 = config_map(docs, "gf-registry-s3", "ha");
    assert!(
        env_from
            .iter()
            .any(|e| e["configMapRef"]["name"] == s3["metadata"]["name"]),
        "ha: endpoint and bucket come from the gf-registry-s3 ConfigMap"
    );
    assert!(str_at(s3, "/data/GF_REGISTRY_DATA", "ha").starts_with("s3://"));
    assert!(str_at(s3, "/data/AWS_ENDPOINT", "ha").starts_with("http"));
    assert_eq!(
        s3["data"]["AWS_ACCESS_KEY_ID"],
        Value::Null,
        "ha: no credential in a ConfigMap"
    );
    assert_eq!(
        s3["data"]["AWS_SECRET_ACCESS_KEY"],
        Value::Null,
        "ha: no credential in a ConfigMap"
    );
    let config: toml::Table = toml::from_str(str_at(
        config_map(docs, "gf-registry-config", "ha"),
        "/data/config.toml",
        "ha",
    ))
    .expect("config");
    assert!(
        config.get("storage").is_none(),
        "ha: storage comes from GF_REGISTRY_DATA, not from config.toml"
    );
    assert_eq!(
        config["mirror"]
            .get("gc_interval_seconds")
            .and_then(toml::Value::as_integer),
        Some(0),
        "ha: retention stays off while replicas do not share what they read"
    );
    let svc = one(docs, "Service", "ha");
    let ingress = one(docs, "Ingress", "ha");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(
        backend["name"], svc["metadata"]["name"],
        "ha: Ingress backend"
    );
    assert_eq!(
        backend["port"]["name"], svc["spec"]["ports"][0]["name"],
        "ha: Ingress port"
    );
    let public = config["server"]["public_url"]
        .as_str()
        .expect("ha: server.public_url");
    let host = ingress["spec"]["rules"][0]["host"].as_str().expect("host");
    assert_eq!(
        public,
        format!("https://{host}/"),
        "ha: public_url is the Ingress host"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) systemd
// ---------------------------------------------------------------------------------------------

/// `KEY=VALUE` lines of a unit file or environment file (comments and sections skipped);
/// repeated keys keep every value.
pub(crate) fn key_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('[')
        })
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_passes_systemd_analyze() {
    let unit_path = deploy_dir().join("systemd/gf-registry.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let kv = key_values(&unit);
    let get = |k: &str| -> Vec<&str> {
        kv.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, want) in [
        ("ExecStart", "/usr/local/bin/gf-registry serve"),
        ("EnvironmentFile", "-/etc/gf-registry/gf-registry.env"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "gf-registry"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(
            get(key).contains(&want),
            "{key}={want} is missing from the unit"
        );
    }
    assert!(
        get("SystemCallFilter").contains(&"@system-service"),
        "SystemCallFilter"
    );
    let stop: u64 = get("TimeoutStopSec")
        .first()
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > 30,
        "TimeoutStopSec={stop} must exceed the server's 30 s shutdown timeout"
    );
    // ProtectSystem=strict: only the state directory is writable, so local data lives there.
    let env = key_values(
        &std::fs::read_to_string(deploy_dir().join("systemd/gf-registry.env")).expect("env file"),
    );
    let data = env
        .iter()
        .find(|(k, _)| k == "GF_REGISTRY_DATA")
        .map(|(_, v)| v.as_str())
        .expect("GF_REGISTRY_DATA");
    assert!(
        data.starts_with("/var/lib/gf-registry/")
            || (data.contains("://") && !data.starts_with("file://")),
        "GF_REGISTRY_DATA={data} is outside the StateDirectory /var/lib/gf-registry"
    );

    // "Where available": a machine without systemd skips this part, CI or not.
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not on PATH");
        return;
    };
    // `verify` wants ExecStart to exist: the server's points at the binary under test, and any
    // other program missing here (git for the fetch unit) is replaced by it too.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut copies = Vec::new();
    for entry in std::fs::read_dir(deploy_dir().join("systemd")).expect("read_dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let text: String = std::fs::read_to_string(&path)
            .expect("unit")
            .lines()
            .map(|l| match l.strip_prefix("ExecStart=") {
                Some(cmd) => {
                    let program = cmd.split_whitespace().next().unwrap_or_default();
                    let program = program.trim_start_matches(['-', '@', '+', '!', ':']);
                    if program == "/usr/local/bin/gf-registry" || !Path::new(program).exists() {
                        format!("ExecStart={} serve\n", env!("CARGO_BIN_EXE_gf-registry"))
                    } else {
                        format!("{l}\n")
                    }
                }
                None => format!("{l}\n"),
            })
            .collect();
        let copy = dir.path().join(&name);
        std::fs::write(&copy, text).expect("write unit");
        copies.push(copy);
    }
    assert!(copies.len() >= 3, "units in deploy/systemd: {copies:?}");
    let (code, out, err) = output(Command::new(&analyze).arg("verify").args(&copies));
    // Unknown keys are only warnings (exit 0): any line about our units counts as a failure.
    let about_units: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("gf-registry"))
        .collect();
    assert!(
        code == 0 && about_units.is_empty(),
        "systemd-analyze verify (exit {code}):\n{out}{err}"
    );
    let copy = dir.path().join("gf-registry.service");
    // The exposure score, where this systemd can compute it offline (systemd 250+).
    let (code, out, err) = output(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&copy),
    );
    let score = format!("{out}{err}")
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for gf-registry.service:")
                .nth(1)
                .map(str::to_owned)
        })
        .and_then(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        });
    match score {
        Some(s) => assert!(
            s <= 2.0,
            "systemd-analyze security: exposure {s} (want <= 2.0)\n{out}"
        ),
        None => eprintln!(
            "systemd-analyze security --offline is not available here (exit {code}): {err}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// (c) the shipped configurations start the server
// ---------------------------------------------------------------------------------------------

/// The binary with the developer's `GF_REGISTRY_*` and `AWS_*` variables removed.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GF_REGISTRY_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c
}

fn client() -> reqwest::Client {
    client::plain()
}

/// Maps an absolute path of the deployment into `root` (`/var/lib/x` -> `ROOT/var/lib/x`).
fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

#[tokio::test]
async fn the_systemd_environment_file_starts_the_server() {
    let text = std::fs::read_to_string(deploy_dir().join("systemd/gf-registry.env")).expect("env");
    let root = tempfile::tempdir().expect("tempdir");
    let mut env = BTreeMap::new();
    for (key, value) in key_values(&text) {
        let value = value.trim_matches('"').to_owned();
        let value = match key.as_str() {
            "GF_REGISTRY_LISTEN" => "127.0.0.1:0".to_owned(),
            _ if value.starts_with('/') => under(root.path(), &value).display().to_string(),
            _ => value,
        };
        env.insert(key, value);
    }
    for (key, value) in &env {
        assert!(
            !value.starts_with("/var/") && !value.starts_with("/etc/"),
            "{key}={value} was not moved into the temp dir"
        );
    }
    // What an operator installs: the registry in the state directory, the policy in /etc.
    let registry = PathBuf::from(&env["GF_REGISTRY_REGISTRY"]);
    copy_tree(&example_registry(), &registry);
    copy_tree(
        &repo_root().join("mirror-policy"),
        Path::new(&env["GF_REGISTRY_MIRROR_POLICY"]),
    );
    let state = under(root.path(), "/var/lib/gf-registry");
    std::fs::create_dir_all(&state).expect("state dir");

    // As the unit runs it: `gf-registry serve` in WorkingDirectory=%S/gf-registry.
    let mut cmd = bin();
    cmd.arg("serve").current_dir(&state).envs(&env);
    let mut served = Spawned::spawn(&mut cmd, Stderr::Collect, Duration::from_secs(30));
    let client = client();
    served.wait_ready(&client).await;
    let r = client
        .get(format!(
            "{}/modules/hello_lib/1.2.0/MODULE.bazel",
            served.base
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let stderr = served.terminate();
    assert!(
        !stderr.contains("ignoring unknown environment variable"),
        "the environment file names a variable the server does not know:\n{stderr}"
    );
    if env.get("GF_REGISTRY_LOG_FORMAT").map(String::as_str) == Some("json") {
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        assert!(
            serde_json::from_str::<Value>(first).is_ok_and(|v| v.is_object()),
            "GF_REGISTRY_LOG_FORMAT=json but the log is not JSON lines: {first:?}"
        );
    }
    let data = PathBuf::from(&env["GF_REGISTRY_DATA"]);
    assert!(
        data.join("cas").is_dir() && data.join("records").is_dir(),
        "data roles created"
    );
}

/// A git repository like git-sync's root: the example registry committed on branch `git-sync`.
fn git_sync_like_clone(path: &Path) {
    let repo = git2::Repository::init_opts(
        path,
        git2::RepositoryInitOptions::new().initial_head("git-sync"),
    )
    .expect("git init");
    copy_tree(&example_registry(), path);
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("find tree");
    let sig = git2::Signature::now("git-sync", "git-sync@example.com").expect("sig");
    repo.commit(Some("HEAD"), &sig, &sig, "sync", &tree, &[])
        .expect("commit");
}

/// Starts the server on an overlay's `config.toml`, adapted to temp paths and loopback, with the
/// base's mirror policy (the ConfigMap's files) and `env` added.
async fn overlay_config_starts(overlay: &str, env: &[(&str, &str)]) {
    let k8s = deploy_dir().join("kubernetes");
    let text = std::fs::read_to_string(k8s.join("overlays").join(overlay).join("config.toml"))
        .expect("config.toml");
    let mut config: toml::Table = toml::from_str(&text).expect("config parses");
    let root = tempfile::tempdir().expect("tempdir");

    let section = |config: &toml::Table, name: &str| -> toml::Table {
        config
            .get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let mut server = section(&config, "server");
    server.insert("listen".into(), "127.0.0.1:0".into());
    let mut registry = section(&config, "registry");
    let reg_path = under(
        root.path(),
        registry["path"].as_str().expect("registry.path"),
    );
    git_sync_like_clone(&reg_path);
    registry.insert("path".into(), reg_path.display().to_string().into());
    let mut mirror = section(&config, "mirror");
    let policy = under(
        root.path(),
        mirror["policy"].as_str().expect("mirror.policy"),
    );
    copy_tree(&k8s.join("base/mirror-policy"), &policy);
    mirror.insert("policy".into(), policy.display().to_string().into());
    config.insert("server".into(), server.into());
    config.insert("registry".into(), registry.into());
    config.insert("mirror".into(), mirror.into());
    if let Some(mut storage) = config.get("storage").and_then(|v| v.as_table()).cloned() {
        for key in ["data", "cas", "records"] {
            if let Some(p) = storage.get(key).and_then(|v| v.as_str()).map(str::to_owned) {
                let moved = under(root.path(), p.trim_start_matches("file://"));
                std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
                storage.insert(key.into(), moved.display().to_string().into());
            }
        }
        config.insert("storage".into(), storage.into());
    }
    let adapted = toml::to_string(&config).expect("serialize");
    for line in adapted.lines() {
        assert!(
            !line.contains("\"/var/") && !line.contains("\"/etc/"),
            "{overlay}: a path was not moved into the temp dir: {line}"
        );
    }
    // Every setting as shipped (public_url included) passes `config check`, which also opens
    // the registry at its ref.
    let file = root.path().join("config.toml");
    std::fs::write(&file, &adapted).expect("write config");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                v.replace("{tmp}", &root.path().display().to_string()),
            )
        })
        .collect();
    let (code, out, err) = output(
        bin()
            .args(["config", "check", "--config"])
            .arg(&file)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(root.path()),
    );
    assert_eq!(code, 0, "{overlay}: config check:\n{out}{err}");
    assert!(
        out.contains("refs/heads/git-sync") || err.contains("refs/heads/git-sync"),
        "{out}{err}"
    );

    // Serve it, as the container does (`serve --config FILE`). The first stdout line prints the
    // public URL, so serve without it to learn the bound port.
    let mut served_config = config.clone();
    if let Some(s) = served_config
        .get_mut("server")
        .and_then(|v| v.as_table_mut())
    {
        s.remove("public_url");
    }
    std::fs::write(&file, toml::to_string(&served_config).expect("serialize")).expect("write");
    let mut cmd = bin();
    cmd.args(["serve", "--config"])
        .arg(&file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root.path());
    let mut served = Spawned::spawn(&mut cmd, Stderr::Collect, Duration::from_secs(30));
    let client = client();
    served.wait_ready(&client).await;
    let r = client
        .get(format!(
            "{}/modules/hello_lib/1.2.0/MODULE.bazel",
            served.base
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        200,
        "{overlay}: served from the git-sync branch"
    );
    let r = client
        .get(format!("{}/bazel/bazelrc", served.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let stderr = served.terminate();
    assert!(
        !stderr.contains("ignoring unknown environment variable"),
        "{overlay}: {stderr}"
    );
}

#[tokio::test]
async fn the_single_overlay_config_starts_the_server() {
    overlay_config_starts("single", &[]).await;
}

#[tokio::test]
async fn the_ha_overlay_config_starts_the_server_with_data_from_the_environment() {
    // In the cluster GF_REGISTRY_DATA is s3://... from the gf-registry-s3 ConfigMap; here a
    // local folder stands in for the bucket.
    overlay_config_starts("ha", &[("GF_REGISTRY_DATA", "{tmp}/bucket")]).await;
}
