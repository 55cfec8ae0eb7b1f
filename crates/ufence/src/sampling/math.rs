//! The two transcendental functions the sampler needs, written here so that `libufence.so` does
//! not depend on `libm`: for a C program that does not link it, loading one more library costs
//! tens of microseconds at every process start. Accurate to about 1e-12 relative, far more than
//! a random draw or an interval needs.

const LN_2: f64 = core::f64::consts::LN_2;

/// Natural logarithm of `x > 0` (NaN for x <= 0 or NaN, +inf for +inf).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)): subnormals are scaled up first.
    let (mut x, mut e) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        x *= (1u64 << 54) as f64;
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > core::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    e as f64 * LN_2 + ln_near_1(m)
}

/// ln(1 + x) for x > -1, exact for small x, where `ln(1.0 + x)` would lose x's low digits.
pub fn ln_1p(x: f64) -> f64 {
    let y = 1.0 + x;
    if (0.5..=2.0).contains(&y) {
        // 2 atanh(x / (2 + x)) = ln(1 + x), computed from x itself.
        atanh_series(x / (2.0 + x))
    } else {
        ln(y)
    }
}

/// ln(m) for m in [sqrt(1/2), sqrt(2)].
fn ln_near_1(m: f64) -> f64 {
    atanh_series((m - 1.0) / (m + 1.0))
}

/// 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), for |s| <= 1/3 (where 14 terms reach 1e-15).
fn atanh_series(s: f64) -> f64 {
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..14 {
        sum += term / (2 * k + 1) as f64;
        term *= s2;
    }
    2.0 * sum
}

/// e^x (0 below about -745, +inf above about 709).
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -745.0 {
        return 0.0;
    }
    // x = k ln2 + r, |r| <= ln2 / 2; e^r by its Taylor series, then scaled by 2^k in two steps
    // (2^k alone may not be representable where the result still is).
    // Rounded by truncation (`round` itself would be a libm call on baseline x86-64).
    let k = (x / LN_2 + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
    let r = x - k as f64 * LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..18 {
        term *= r / n as f64;
        sum += term;
    }
    let half = k / 2;
    sum * pow2(half) * pow2(k - half)
}

/// 2^k for k in the normal exponent range.
fn pow2(k: i64) -> f64 {
    f64::from_bits(((k + 1023).clamp(1, 2046) as u64) << 52)
}

/// base^x for base > 0.
pub fn pow(base: f64, x: f64) -> f64 {
    exp(x * ln(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        a == b || ((a - b) / b).abs() < rel
    }

    #[test]
    fn ln_matches_std() {
        let mut x = 1e-310;
        while x < 1e300 {
            assert!(
                close(ln(x), x.ln(), 1e-13),
                "ln({x}) = {} not {}",
                ln(x),
                x.ln()
            );
            x *= 1.37;
        }
        for x in [0.5, 0.9998, 1.0, 1.0001, 2.0, 3.0, 1e6 + 0.5] {
            assert!((ln(x) - x.ln()).abs() < 1e-15, "ln({x})");
        }
        assert!(ln(-1.0).is_nan() && ln(0.0) == f64::NEG_INFINITY);
    }

    #[test]
    fn ln_1p_matches_std_for_small_arguments() {
        for p in [1e-15, 1e-9, 1e-6, 1.0 / 5000.0, 0.01, 0.3, 0.5, 0.9] {
            for x in [-p, p] {
                assert!(close(ln_1p(x), x.ln_1p(), 1e-13), "ln_1p({x})");
            }
        }
        assert!(close(ln_1p(10.0), 11f64.ln(), 1e-14));
    }

    #[test]
    fn exp_and_pow_match_std() {
        let mut x = -740.0;
        while x < 709.0 {
            assert!(
                close(exp(x), x.exp(), 1e-12),
                "exp({x}) = {} not {}",
                exp(x),
                x.exp()
            );
            x += 0.731;
        }
        for (b, x) in [(100.0, 0.5), (10_000.0, 0.999), (2.0, 10.0), (1.5, 0.0)] {
            assert!(close(pow(b, x), f64::powf(b, x), 1e-12), "pow({b}, {x})");
        }
    }
}
