//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the
//! byte offset of a nested struct member, which the eBPF program then reads with
//! `bpf_probe_read_kernel`. Offsets differ between kernels and configs; BTF is the truth.
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

/// One type, as offsets into the blob: nothing is copied, so parsing the kernel's 5 MB of BTF
/// costs little more memory than the file itself.
#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u32,
    kind_flag: bool,
    name_offset: u32,
    /// For typedefs and modifiers: the type they refer to.
    referenced: u32,
    /// For structs and unions: where their members start in the blob, and how many.
    members_at: usize,
    vlen: usize,
}

/// The types of a BTF blob, by type id.
#[derive(Debug)]
pub struct Btf<'a> {
    data: &'a [u8],
    strings: &'a [u8],
    types: Vec<Type>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

impl<'a> Btf<'a> {
    /// Parses a little-endian BTF blob.
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>, String> {
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

        // Type id 0 is `void`.
        let void = Type {
            kind: 0,
            kind_flag: false,
            name_offset: 0,
            referenced: 0,
            members_at: 0,
            vlen: 0,
        };
        let mut types = vec![void];
        let mut at = type_start;
        while at < type_end {
            let name_offset = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let referenced = u32_at(data, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let members_at = at;
            match kind {
                KIND_STRUCT | KIND_UNION => {
                    // The last member must be in the blob.
                    if vlen > 0 {
                        u32_at(data, at + vlen * 12 - 4)?;
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
                kind_flag: info >> 31 == 1,
                name_offset,
                referenced,
                members_at,
                vlen,
            });
        }
        Ok(Btf {
            data,
            strings,
            types,
        })
    }

    /// The name at `offset` in the string section.
    fn name(&self, offset: u32) -> &'a [u8] {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..end]
    }

    /// Whether the name at `offset` is `name`: compares `name`'s bytes and the NUL after them
    /// without measuring the whole name first, since lookups compare every type's name.
    fn name_is(&self, offset: u32, name: &[u8]) -> bool {
        let start = offset as usize;
        self.strings.get(start..start + name.len()) == Some(name)
            && self.strings.get(start + name.len()) == Some(&0)
    }

    /// Whether a typedef named `name` exists (the kernel declares one, `btf_trace_<name>`, for
    /// every tracepoint a BTF-enabled program can attach to).
    pub fn has_typedef(&self, name: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.kind == KIND_TYPEDEF && self.name_is(t.name_offset, name.as_bytes()))
    }

    /// The (value, name) pairs of `enum <name>`, if the BTF has it.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(u32, String)>> {
        let found = self
            .types
            .iter()
            .find(|t| t.kind == KIND_ENUM && self.name_is(t.name_offset, name.as_bytes()))?;
        (0..found.vlen)
            .map(|i| {
                let at = found.members_at + i * 8;
                let name = self.name(u32_at(self.data, at).ok()?);
                let value = u32_at(self.data, at + 4).ok()?;
                Some((value, String::from_utf8_lossy(name).into_owned()))
            })
            .collect()
    }

    /// Byte offset of `path` (member names, outermost first) inside `struct <root>`.
    /// Members of anonymous structs and unions are found as if they were direct members,
    /// as in C.
    pub fn member_offset(&self, root: &str, path: &[&str]) -> Result<u32, String> {
        // The first struct of that name, as the kernel's own BTF lookups do.
        let mut type_id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name_is(t.name_offset, root.as_bytes()))
            .ok_or_else(|| format!("struct {root} not in BTF"))? as u32;
        let mut bits = 0u32;
        for name in path {
            let (member_bits, member_type) = self
                .find_member(type_id, name.as_bytes())
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
    fn find_member(&self, type_id: u32, name: &[u8]) -> Option<(u32, u32)> {
        let composite = *self.types.get(self.resolve(type_id) as usize)?;
        if composite.kind != KIND_STRUCT && composite.kind != KIND_UNION {
            return None;
        }
        (0..composite.vlen).find_map(|i| {
            let m = composite.members_at + i * 12;
            let member_name = self.name(u32_at(self.data, m).ok()?);
            let member_type = u32_at(self.data, m + 4).ok()?;
            let offset = u32_at(self.data, m + 8).ok()?;
            // With kind_flag, the top 8 bits hold a bitfield's size.
            let bit_offset = if composite.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            };
            if member_name == name {
                Some((bit_offset, member_type))
            } else if member_name.is_empty() {
                self.find_member(member_type, name)
                    .map(|(bits, id)| (bit_offset + bits, id))
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
