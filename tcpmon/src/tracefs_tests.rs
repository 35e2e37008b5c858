use super::*;
use tcpmon_common::RECORD_BYTES;

/// The format file of this machine's kernel (6.18).
const CURRENT: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s protocol=%s\"";

#[test]
fn parses_this_kernels_layout() {
    assert_eq!(
        parse_layout(CURRENT),
        Ok(TracepointLayout {
            skaddr: 8,
            oldstate: 16,
            newstate: 20,
            sport: 24,
            dport: 26,
            family: 28,
            protocol: 30,
            protocol_size: 2,
            saddr: 32,
            daddr: 36,
            saddr_v6: 40,
            daddr_v6: 56,
        })
    );
}

#[test]
fn follows_a_larger_common_header() {
    // A kernel whose common header grew by 8 bytes (e.g. with common_preempt_lazy_count and
    // padding): every field moves, and the parser must follow.
    let larger = "format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:unsigned char common_preempt_lazy_count;\toffset:8;\tsize:1;\tsigned:0;

\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:28;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:34;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:36;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:38;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:40;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:44;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:48;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:64;\tsize:16;\tsigned:0;
";
    let layout = parse_layout(larger).expect("parses");
    assert_eq!(layout.skaddr, 16);
    assert_eq!(layout.oldstate, 24);
    assert_eq!(layout.newstate, 28);
    assert_eq!((layout.sport, layout.dport), (32, 34));
    assert_eq!((layout.saddr_v6, layout.daddr_v6), (48, 64));
    assert_eq!(layout.family, 36);
    assert_eq!(layout.protocol, 38);
    assert_eq!(layout.protocol_size, 2);
}

#[test]
fn reads_a_u8_protocol_from_older_kernels() {
    // Linux 4.16 .. 5.5: `__u8 protocol` right after family.
    let old = "format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u8 protocol;\toffset:30;\tsize:1;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:31;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:35;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:39;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:55;\tsize:16;\tsigned:0;
";
    let layout = parse_layout(old).expect("parses");
    assert_eq!(layout.protocol, 30);
    assert_eq!(layout.protocol_size, 1);
}

#[test]
fn names_the_missing_field() {
    let without_family: String = CURRENT
        .lines()
        .filter(|l| !l.contains(" family;"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        parse_layout(&without_family),
        Err("field `family` not found".to_string())
    );
}

#[test]
fn rejects_an_unexpected_field_size() {
    let wide = CURRENT.replace(
        "int oldstate;\toffset:16;\tsize:4;",
        "int oldstate;\toffset:16;\tsize:8;",
    );
    assert_eq!(
        parse_layout(&wide),
        Err("field `oldstate` has size 8, expected [4]".to_string())
    );
}

#[test]
fn does_not_confuse_saddr_with_saddr_v6() {
    assert_eq!(find_field(CURRENT, "saddr"), Some((32, 4)));
    assert_eq!(find_field(CURRENT, "saddr_v6"), Some((40, 16)));
    assert_eq!(find_field(CURRENT, "common_pid"), Some((4, 4)));
}

#[test]
fn rejects_fields_the_program_cannot_read() {
    let far = CURRENT.replace("int newstate;\toffset:20;", "int newstate;\toffset:128;");
    assert_eq!(
        parse_layout(&far),
        Err(format!("field `newstate` ends past byte {RECORD_BYTES}"))
    );
    let misaligned = CURRENT.replace("__u16 family;\toffset:28;", "__u16 family;\toffset:29;");
    assert_eq!(
        parse_layout(&misaligned),
        Err("field `family` at offset 29 is not aligned".to_string())
    );
}
