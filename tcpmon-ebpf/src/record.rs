//! Reading the tracepoint record and kernel memory.
use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext, EbpfContext};
use tcpmon_common::RECORD_BYTES;

/// Reads a load-time global; volatile so the compiler cannot fold the default value in.
#[inline(always)]
pub fn global(value: &'static u32) -> u32 {
    // SAFETY: `value` is a valid static; the loader rewrites it before the program runs.
    unsafe { core::ptr::read_volatile(value) }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read_kernel<T>(base: u64, offset: u32) -> Result<T, i32> {
    let field = (base + u64::from(offset)) as *const T;
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(field) }
}

/// The start of the tracepoint record, copied with one helper call. The verifier rejects ctx
/// reads at offsets that are not in the instruction itself, and the offsets here come from the
/// format file at load time; reading fields from a stack copy costs one `bpf_probe_read_kernel`
/// per event instead of one per field.
#[repr(C, align(8))]
pub struct Record([u8; RECORD_BYTES]);

impl Record {
    #[inline(always)]
    pub fn read(ctx: &TracePointContext) -> Result<Record, i32> {
        // SAFETY: ctx points at the record in perf's per-CPU trace buffer, which is larger than
        // RECORD_BYTES; the helper fails cleanly rather than fault if it were not.
        unsafe { bpf_probe_read_kernel(ctx.as_ptr().cast::<Record>()) }
    }

    #[inline(always)]
    pub fn field<T: Copy>(&self, offset: u32) -> Result<T, i32> {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > RECORD_BYTES {
            return Err(-1);
        }
        // SAFETY: in bounds (checked above) and naturally aligned (the agent rejects layouts
        // whose fields are not).
        Ok(unsafe { core::ptr::read(self.0.as_ptr().add(offset).cast::<T>()) })
    }
}
