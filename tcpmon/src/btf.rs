//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the
//! byte offset of a nested struct member, which the eBPF program then reads with
//! `bpf_probe_read_kernel`. Offsets differ between kernels and configs; BTF is the truth.
use std::collections::HashMap;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug)]
struct Type {
    kind: u32,
    name: String,
    /// For typedefs and modifiers: the type they refer to.
    referenced: u32,
    members: Vec<Member>,
}

/// The structs, unions and type aliases of a BTF blob, by type id.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err("not a little-endian BTF blob (bad magic)".into());
        }
        let header_len = u32_at(data, 4)? as usize;
        let type_start = header_len + u32_at(data, 8)? as usize;
        let type_end = type_start + u32_at(data, 12)? as usize;
        let str_start = header_len + u32_at(data, 16)? as usize;
        let str_end = str_start + u32_at(data, 20)? as usize;
        let strings = data
            .get(str_start..str_end)
            .ok_or("string section out of bounds")?;
        let name = |offset: u32| -> String {
            let tail = strings.get(offset as usize..).unwrap_or_default();
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        };

        // Type id 0 is `void`.
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            referenced: 0,
            members: Vec::new(),
        }];
        let mut at = type_start;
        while at < type_end {
            let name_offset = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let size_or_type = u32_at(data, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(data, m + 8)?;
                        members.push(Member {
                            name: name(u32_at(data, m)?),
                            type_id: u32_at(data, m + 4)?,
                            // With kind_flag, the top 8 bits hold a bitfield's size.
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    at += vlen * 12;
                }
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                // PTR, FWD, TYPEDEF, the qualifiers, FUNC, FLOAT, TYPE_TAG: nothing follows.
                0..=KIND_ENUM64 => {}
                // A kind this reader does not know may be followed by data of unknown size.
                _ => return Err(format!("unknown BTF kind {kind}")),
            }
            types.push(Type {
                kind,
                name: name(name_offset),
                referenced: size_or_type,
                members,
            });
        }
        let structs_by_name = types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == KIND_STRUCT && !t.name.is_empty())
            .map(|(id, t)| (t.name.clone(), id as u32))
            .rev() // the first definition of a name wins
            .collect();
        Ok(Btf {
            types,
            structs_by_name,
        })
    }

    /// Byte offset of `path` (member names, outermost first) inside `struct <root>`.
    /// Members of anonymous structs and unions are found as if they were direct members,
    /// as in C.
    pub fn member_offset(&self, root: &str, path: &[&str]) -> Result<u32, String> {
        let mut type_id = *self
            .structs_by_name
            .get(root)
            .ok_or_else(|| format!("struct {root} not in BTF"))?;
        let mut bits = 0u32;
        for name in path {
            let (member_bits, member_type) = self
                .find_member(type_id, name)
                .ok_or_else(|| format!("struct {root} has no member path {}", path.join(".")))?;
            bits += member_bits;
            type_id = member_type;
        }
        if !bits.is_multiple_of(8) {
            return Err(format!("{root}.{} is a bitfield", path.join(".")));
        }
        Ok(bits / 8)
    }

    /// (bit offset, type id) of member `name` of the struct or union `type_id`.
    fn find_member(&self, type_id: u32, name: &str) -> Option<(u32, u32)> {
        let composite = self.types.get(self.resolve(type_id) as usize)?;
        if composite.kind != KIND_STRUCT && composite.kind != KIND_UNION {
            return None;
        }
        composite.members.iter().find_map(|m| {
            if m.name == name {
                Some((m.bit_offset, m.type_id))
            } else if m.name.is_empty() {
                self.find_member(m.type_id, name)
                    .map(|(bits, id)| (m.bit_offset + bits, id))
            } else {
                None
            }
        })
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut type_id: u32) -> u32 {
        while let Some(t) = self.types.get(type_id as usize) {
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    type_id = t.referenced
                }
                _ => break,
            }
        }
        type_id
    }
}

#[cfg(test)]
#[path = "btf_tests.rs"]
mod tests;
