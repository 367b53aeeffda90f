//! Shared by the e2e tests and the benches: component bytes that differ
//! without behaving differently.

/// `wasm` with a custom section `tidewater-build` holding `tag` appended
/// (WebAssembly core spec §5.5.3: custom sections may appear anywhere and
/// are ignored by execution): a different SHA-256, the same behaviour.
pub fn rebuilt(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"tidewater-build";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}
