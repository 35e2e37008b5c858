use super::*;

const UID: &str = "4f6c3c9e-8b1a-4d2e-9f00-1234567890ab";

fn pods() -> Pods {
    let mut by_uid = HashMap::new();
    by_uid.insert(UID.to_string(), "shop/web-7d9f".to_string());
    Pods { by_uid }
}

#[test]
fn names_the_root_units_pods_and_containers() {
    let pods = pods();
    let systemd_pod = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-0123456789abcdef0123.scope",
        UID.replace('-', "_")
    );
    let cases = [
        ("/", "host"),
        ("/system.slice/nginx.service", "nginx.service"),
        ("/tcpmon-test.slice/web.service", "web.service"),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            "user@1000.service",
        ),
        ("/user.slice", "user.slice"),
        ("/init.scope", "init.scope"),
        (&systemd_pod, "shop/web-7d9f"),
        (
            &format!("/kubepods/besteffort/pod{UID}/0123456789abcdef"),
            "shop/web-7d9f",
        ),
        (
            "/kubepods.slice/kubepods-pod11111111-2222-3333-4444-555555555555.slice",
            "pod/11111111-2222-3333-4444-555555555555",
        ),
        (
            "/system.slice/docker-0123456789abcdef0123456789abcdef.scope",
            "container/0123456789ab",
        ),
        ("/docker/fedcba9876543210fedc", "container/fedcba987654"),
        (
            "/machine.slice/libpod-aaaaaaaaaaaaaaaa.scope",
            "container/aaaaaaaaaaaa",
        ),
        // Not a container: a scope of another name, a short id.
        ("/system.slice/session-3.scope", "session-3.scope"),
        ("/docker/abc", "abc"),
    ];
    for (path, want) in cases {
        assert_eq!(name(path, &pods), want, "{path}");
    }
}

#[test]
fn reads_pods_from_the_kubelets_log_directories() {
    let dir = std::env::temp_dir().join(format!("tcpmon-pods-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(format!("shop_web-7d9f_{UID}"))).expect("mkdir");
    std::fs::create_dir_all(dir.join("not-a-pod")).expect("mkdir");
    let pods = Pods::read(&dir);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(pods.get(UID), Some("shop/web-7d9f"));
    assert_eq!(pods.by_uid.len(), 1);
    assert!(Pods::read(Path::new("/nonexistent")).by_uid.is_empty());
}
