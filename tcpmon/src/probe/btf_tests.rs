use super::*;

/// Builds a BTF blob: `struct outer { int a; union { int b; struct inner in; }; const_inner c; }`
/// where `struct inner { long x; int y; }` and `const_inner` is a typedef of `const struct inner`.
fn sample_blob() -> Vec<u8> {
    let mut strings =
        b"\0int\0long\0inner\0x\0y\0outer\0a\0b\0in\0c\0const_inner\0color\0RED\0BLUE\0".to_vec();
    let find = |strings: &[u8], s: &str| -> u32 {
        let needle = [s.as_bytes(), b"\0"].concat();
        (1..strings.len())
            .find(|&i| strings[i - 1] == 0 && strings[i..].starts_with(&needle))
            .expect("string present") as u32
    };
    let s = |name: &str| find(&strings, name);
    let mut types = Vec::new();
    let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    // 1: int (4 bytes)
    push(&[s("int"), info(KIND_INT, 0), 4, 32]);
    // 2: long (8 bytes)
    push(&[s("long"), info(KIND_INT, 0), 8, 64]);
    // 3: struct inner { long x @0; int y @64 bits }
    push(&[s("inner"), info(KIND_STRUCT, 2), 16]);
    push(&[s("x"), 2, 0, s("y"), 1, 64]);
    // 4: anonymous union { int b; struct inner in; }
    push(&[0, info(KIND_UNION, 2), 16]);
    push(&[s("b"), 1, 0, s("in"), 3, 0]);
    // 5: const struct inner
    push(&[0, info(KIND_CONST, 0), 3]);
    // 6: typedef const_inner = 5
    push(&[s("const_inner"), info(KIND_TYPEDEF, 0), 5]);
    // 7: struct outer { int a @0; union @64 bits; const_inner c @192 bits }
    push(&[s("outer"), info(KIND_STRUCT, 3), 40]);
    push(&[s("a"), 1, 0, 0, 4, 64, s("c"), 6, 192]);
    // 8: enum color { RED = 0, BLUE = 7 }
    push(&[s("color"), info(KIND_ENUM, 2), 4]);
    push(&[s("RED"), 0, s("BLUE"), 7]);

    let mut blob = Vec::new();
    blob.extend(MAGIC.to_le_bytes());
    blob.extend([1u8, 0]);
    let header_len = 24u32;
    for word in [
        header_len,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        blob.extend(word.to_le_bytes());
    }
    blob.extend(&types);
    blob.append(&mut strings);
    blob
}

#[test]
fn finds_direct_nested_and_anonymous_members() {
    let blob = sample_blob();
    let btf = Btf::parse(&blob).expect("parses");
    assert_eq!(btf.member_offset("outer", &["a"]), Ok(0));
    assert_eq!(btf.member_offset("outer", &["b"]), Ok(8));
    assert_eq!(btf.member_offset("outer", &["in", "y"]), Ok(16));
    assert_eq!(btf.member_offset("outer", &["c", "y"]), Ok(32));
    assert_eq!(btf.member_offset("inner", &["y"]), Ok(8));
}

#[test]
fn says_what_is_missing() {
    let blob = sample_blob();
    let btf = Btf::parse(&blob).expect("parses");
    assert_eq!(
        btf.member_offset("outer", &["in", "z"]),
        Err("struct outer has no member path in.z".to_string())
    );
    assert_eq!(
        btf.member_offset("nosuch", &["a"]),
        Err("struct nosuch not in BTF".to_string())
    );
}

#[test]
fn rejects_garbage() {
    assert!(Btf::parse(b"not btf at all").is_err());
    assert!(Btf::parse(&[]).is_err());
    let mut truncated = sample_blob();
    truncated.truncate(40);
    assert!(Btf::parse(&truncated).is_err());
}

#[test]
fn reads_this_kernels_socket_layout() {
    // Every supported machine has BTF (the agent refuses to start without it).
    let data = std::fs::read(VMLINUX_BTF).expect("/sys/kernel/btf/vmlinux is readable");
    let btf = Btf::parse(&data).expect("vmlinux BTF parses");
    let net = btf
        .member_offset("sock", &["__sk_common", "skc_net", "net"])
        .expect("sock has a netns pointer");
    assert_eq!(net % 8, 0, "a pointer is 8-byte aligned");
    let inum = btf
        .member_offset("net", &["ns", "inum"])
        .expect("net.ns.inum");
    assert_eq!(inum % 4, 0);
}

#[test]
fn reads_this_kernels_tcp_fields() {
    let data = std::fs::read(VMLINUX_BTF).expect("/sys/kernel/btf/vmlinux is readable");
    let btf = Btf::parse(&data).expect("vmlinux BTF parses");
    let err = btf.member_offset("sock", &["sk_err"]).expect("sock.sk_err");
    let srtt = btf
        .member_offset("tcp_sock", &["srtt_us"])
        .expect("tcp_sock.srtt_us");
    assert_eq!(err % 4, 0);
    assert_eq!(srtt % 4, 0);
    eprintln!("sk_err at {err}, srtt_us at {srtt}");
}

#[test]
fn reads_an_enums_names_and_values() {
    let blob = sample_blob();
    let btf = Btf::parse(&blob).expect("parses");
    assert_eq!(
        btf.enum_values("color"),
        Some(vec![(0, "RED".to_string()), (7, "BLUE".to_string())])
    );
    assert_eq!(btf.enum_values("colour"), None);
}
