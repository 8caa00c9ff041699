//! Kubernetes quantities (`10Gi`, `500M`, `1024`) as whole bytes, for NATS' stream limits.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `quantity` in bytes: a whole or decimal number with an optional binary (`Ki` … `Ei`) or
/// decimal (`k` … `E`) suffix, rounded up to a whole byte.
///
/// # Errors
/// A text saying what is wrong: a negative number, an exponent, milli-units, an unknown suffix,
/// or more bytes than a `u64` holds.
pub fn bytes(quantity: &Quantity) -> Result<u64, String> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        other => {
            return Err(format!(
                "{text:?} is not a size in bytes (suffix {other:?}; use a number, or Ki, Mi, Gi, \
                 Ti, or k, M, G, T)"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("{text:?} is not a size in bytes"));
    }
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            Ok(0)
        } else {
            s.parse::<u128>()
                .map_err(|_| format!("{text:?} is too large"))
        }
    };
    let scale = 10u128
        .checked_pow(u32::try_from(fraction.len()).map_err(|_| format!("{text:?} is too long"))?)
        .ok_or_else(|| format!("{text:?} has too many decimals"))?;
    let value = digits(whole)?
        .checked_mul(scale)
        .and_then(|w| w.checked_add(digits(fraction).ok()?))
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    u64::try_from(value.div_ceil(scale)).map_err(|_| format!("{text:?} is more bytes than fit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<u64, String> {
        bytes(&Quantity(s.to_owned()))
    }

    #[test]
    fn quantities_become_bytes() {
        assert_eq!(q("0"), Ok(0));
        assert_eq!(q("1024"), Ok(1024));
        assert_eq!(q("1Ki"), Ok(1024));
        assert_eq!(q("1Gi"), Ok(1 << 30));
        assert_eq!(q("10G"), Ok(10_000_000_000));
        assert_eq!(q("1.5Gi"), Ok(3 << 29));
        assert_eq!(q("0.5k"), Ok(500));
        assert_eq!(q("1.0001"), Ok(2), "rounded up to a whole byte");
        assert_eq!(q("15Ei"), Ok(15 << 60));
    }

    #[test]
    fn what_is_not_a_size_is_refused_with_the_value() {
        for bad in [
            "",
            "-1",
            "1m",
            "1e3",
            "Gi",
            "1.2.3",
            "1GB",
            "16Ei",
            "99999999999999999999999999999999999999999",
        ] {
            let error = q(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }
}
