//! The password-based encryption of minisign secret keys (kdf `Sc`): libsodium's
//! `crypto_pwhash_scryptsalsa208sha256`, whose `opslimit`/`memlimit` stand for scrypt's N, r and p,
//! gives a key stream that is XORed over key id ‖ secret key ‖ checksum. This module only derives
//! that stream; the key file layout is in `signature.rs` and `bundle-spec/signatures.md`.

use zeroize::Zeroizing;

/// libsodium's `crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_SENSITIVE`: what `minisign -G` writes.
pub const OPSLIMIT_SENSITIVE: u64 = 33_554_432;
/// libsodium's `crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_SENSITIVE` (1 GiB): what `minisign -G`
/// writes.
pub const MEMLIMIT_SENSITIVE: u64 = 1_073_741_824;

/// Largest scrypt memory (128·r·N bytes) a key file may ask for: minisign's own 1 GiB. A key file
/// asking for more is refused rather than letting a damaged or hostile file exhaust the machine.
const MAX_SCRYPT_MEMORY: u64 = MEMLIMIT_SENSITIVE;
/// Largest scrypt parallelism `p` a key file may ask for (minisign's and rsign's parameters give 1);
/// each unit costs as much time as the whole derivation at p = 1.
const MAX_SCRYPT_P: u32 = 16;

/// scrypt's parameters as libsodium's `pickparams` chooses them from `opslimit` and `memlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptParams {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl ScryptParams {
    /// libsodium's `pickparams` (crypto_pwhash/scryptsalsa208sha256/pwhash_scryptsalsa208sha256.c),
    /// step for step, so a key file made by minisign opens with the same N, r and p.
    pub fn pick(opslimit: u64, memlimit: u64) -> ScryptParams {
        let opslimit = opslimit.max(32_768);
        let r: u32 = 8;
        let smallest_log_n_above = |max_n: u64| {
            let mut log_n: u8 = 1;
            while log_n < 63 && (1u64 << log_n) <= max_n / 2 {
                log_n += 1;
            }
            log_n
        };
        if opslimit < memlimit / 32 {
            let max_n = opslimit / (r as u64 * 4);
            ScryptParams { log_n: smallest_log_n_above(max_n), r, p: 1 }
        } else {
            let max_n = memlimit / (r as u64 * 128);
            let log_n = smallest_log_n_above(max_n);
            let max_rp = ((opslimit / 4) / (1u64 << log_n)).min(0x3fff_ffff);
            ScryptParams { log_n, r, p: (max_rp as u32) / r }
        }
    }

    /// Bytes of memory scrypt needs with these parameters (128·r·N).
    pub fn memory(&self) -> u64 {
        128u64.saturating_mul(self.r as u64).saturating_mul(1u64.checked_shl(self.log_n as u32).unwrap_or(u64::MAX))
    }
}

/// Derives `len` bytes from `password` and `salt` as libsodium's
/// `crypto_pwhash_scryptsalsa208sha256(out, len, password, salt, opslimit, memlimit)` does.
/// Refuses parameters beyond minisign's own (more than 1 GiB of memory, p above 16) with a reason.
pub fn derive(
    password: &[u8],
    salt: &[u8; 32],
    opslimit: u64,
    memlimit: u64,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let params = ScryptParams::pick(opslimit, memlimit);
    if params.memory() > MAX_SCRYPT_MEMORY || params.p > MAX_SCRYPT_P || params.p == 0 {
        return Err(format!(
            "its scrypt parameters (opslimit {opslimit}, memlimit {memlimit}: N = 2^{}, r = {}, p = {}) ask for more than minisign's own (1 GiB, p = 1)",
            params.log_n, params.r, params.p
        ));
    }
    // `len` of Params is only used for PHC password-hash strings, not by `scrypt::scrypt`.
    let p = scrypt::Params::new(params.log_n, params.r, params.p, 64)
        .map_err(|e| format!("invalid scrypt parameters: {e}"))?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    scrypt::scrypt(password, salt, &p, &mut out).map_err(|e| format!("scrypt failed: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickparams_matches_libsodium() {
        // minisign's SENSITIVE limits: N = 2^20, r = 8, p = 1 (1 GiB).
        assert_eq!(ScryptParams::pick(OPSLIMIT_SENSITIVE, MEMLIMIT_SENSITIVE), ScryptParams { log_n: 20, r: 8, p: 1 });
        // libsodium's INTERACTIVE limits (rsign2 uses these): N = 2^14, r = 8, p = 1.
        assert_eq!(ScryptParams::pick(524_288, 16_777_216), ScryptParams { log_n: 14, r: 8, p: 1 });
        // opslimit below memlimit/32: N from the opslimit.
        assert_eq!(ScryptParams::pick(32_768, 1 << 30), ScryptParams { log_n: 10, r: 8, p: 1 });
        assert_eq!(ScryptParams::pick(0, 1 << 30), ScryptParams { log_n: 10, r: 8, p: 1 });
    }

    #[test]
    fn derive_refuses_huge_parameters() {
        // A larger memlimit alone does not raise N (the opslimit bounds it too)...
        assert_eq!(ScryptParams::pick(OPSLIMIT_SENSITIVE, MEMLIMIT_SENSITIVE * 2).memory(), MEMLIMIT_SENSITIVE);
        // ...both larger do: N = 2^22, 4 GiB, refused before any work.
        let err = derive(b"pw", &[0; 32], 1 << 40, 4 << 30, 104).unwrap_err();
        assert!(err.contains("1 GiB"), "{err}");
        let err = derive(b"pw", &[0; 32], u64::MAX, 1 << 24, 104).unwrap_err();
        assert!(err.contains("p = "), "{err}");
    }

    #[test]
    fn derive_is_scrypt() {
        // The limits pick N = 2^10, r = 8, p = 1; interop with minisign's own files is tested in
        // signature.rs and tests/it/minisign_interop.rs.
        let out = derive(b"pw", &[7; 32], 32_768, 1 << 30, 104).unwrap();
        let mut want = vec![0u8; 104];
        scrypt::scrypt(b"pw", &[7; 32], &scrypt::Params::new(10, 8, 1, 64).unwrap(), &mut want).unwrap();
        assert_eq!(&out[..], &want[..]);
    }
}
