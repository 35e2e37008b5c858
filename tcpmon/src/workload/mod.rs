//! Whose sockets: the workload a socket's cgroup (v2) stands for, as a person names it.
//!
//! The program reads each socket's cgroup id from the socket itself (set when the socket was
//! created, copied from a listener to its children); [`cgroups::Workloads`] finds the cgroup's
//! path under the cgroup2 mount, and [`name`] makes a name of the path:
//!
//! | cgroup path | workload |
//! |---|---|
//! | `/` | `host` |
//! | `…/kubepods-burstable-pod<UID>.slice/…`, `…/kubepods/burstable/pod<UID>/…` | `NAMESPACE/POD` from the kubelet's `/var/log/pods/NAMESPACE_POD_UID`, else `pod/UID` |
//! | `…/docker-<ID>.scope`, `cri-containerd-<ID>.scope`, `crio-<ID>.scope`, `libpod-<ID>.scope`, `/docker/<ID>` | `container/` and the first 12 characters of the ID |
//! | `…/nginx.service/…` | `nginx.service` (the outermost unit: `user@1000.service` for everything a user runs) |
//! | anything else | its last component (`user.slice`, `init.scope`) |
pub mod cgroups;

use std::{collections::HashMap, fs, path::Path};

/// The workload of a socket whose cgroup was gone before the agent looked, or that the kernel
/// did not give.
pub const UNKNOWN: &str = "unknown";

/// Pod UIDs and their `NAMESPACE/POD`, from the kubelet's log directories (`/var/log/pods`
/// holds one `NAMESPACE_POD_UID` directory per pod on the node).
#[derive(Debug, Default)]
pub struct Pods {
    by_uid: HashMap<String, String>,
}

impl Pods {
    /// The pods of `dir`; none if it is missing (not a Kubernetes node).
    pub fn read(dir: &Path) -> Pods {
        let mut by_uid = HashMap::new();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // NAMESPACE_POD_UID: namespaces and pod names never hold '_', UIDs are UUIDs.
            let mut parts = name.splitn(3, '_');
            if let (Some(namespace), Some(pod), Some(uid)) =
                (parts.next(), parts.next(), parts.next())
            {
                by_uid.insert(uid.to_string(), format!("{namespace}/{pod}"));
            }
        }
        Pods { by_uid }
    }

    fn get(&self, uid: &str) -> Option<&str> {
        self.by_uid.get(uid).map(String::as_str)
    }
}

/// The workload of the cgroup at `path` (relative to the cgroup2 mount, starting with '/').
pub fn name(path: &str, pods: &Pods) -> String {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.is_empty() {
        return "host".to_string();
    }
    if let Some(uid) = components.iter().find_map(|c| pod_uid(c)) {
        return pods
            .get(&uid)
            .map_or_else(|| format!("pod/{uid}"), str::to_string);
    }
    if let Some(id) = components
        .iter()
        .enumerate()
        .find_map(|(i, c)| container_id(c, i.checked_sub(1).map(|p| components[p])))
    {
        return format!("container/{}", &id[..id.len().min(12)]);
    }
    if let Some(unit) = components.iter().find(|c| c.ends_with(".service")) {
        return unit.to_string();
    }
    components[components.len() - 1].to_string()
}

/// The pod UID of a kubelet cgroup: `kubepods-besteffort-pod<UID>.slice` (systemd driver,
/// '-' in the UID written as '_') or `pod<UID>` (cgroupfs driver).
fn pod_uid(component: &str) -> Option<String> {
    let at = component.rfind("pod")?;
    let rest = &component[at + 3..];
    let uid = rest.strip_suffix(".slice").unwrap_or(rest);
    let systemd = component.starts_with("kubepods") && component.ends_with(".slice");
    let cgroupfs = at == 0;
    let uuid_like = uid.len() == 36
        && uid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_');
    ((systemd || cgroupfs) && uuid_like).then(|| uid.replace('_', "-"))
}

/// The container id of a runtime's scope (`docker-<ID>.scope` and the like) or of a
/// cgroupfs-driver directory under `docker`, `containerd` or `crio` (`/docker/<ID>`).
fn container_id<'a>(component: &'a str, parent: Option<&str>) -> Option<&'a str> {
    const SCOPES: [&str; 5] = [
        "docker-",
        "cri-containerd-",
        "crio-",
        "libpod-",
        "containerd-",
    ];
    let hex = |id: &str| id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(scope) = component.strip_suffix(".scope") {
        let id = SCOPES.iter().find_map(|p| scope.strip_prefix(p))?;
        return hex(id).then_some(id);
    }
    let runtime_dir = matches!(parent, Some("docker" | "containerd" | "crio" | "libpod"));
    (runtime_dir && hex(component)).then_some(component)
}

#[cfg(test)]
#[path = "name_tests.rs"]
mod tests;
