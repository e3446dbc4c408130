//! Statistics over repetitions: description with a 95% confidence interval
//! of the mean (Student's t), and Welch's unequal-variance t-test between
//! two groups. Pure functions on slices.

/// A group of values described.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Described {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (n − 1); 0 for one value.
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// 95% confidence interval of the mean; none for one value.
    pub ci95: Option<(f64, f64)>,
}

/// Describes `values` (none when empty).
pub fn describe(values: &[f64]) -> Option<Described> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let ci95 = (n > 1).then(|| {
        let half = t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt();
        (mean - half, mean + half)
    });
    Some(Described {
        n,
        mean,
        median: percentile_sorted(&sorted, 0.5),
        std,
        min: sorted[0],
        max: sorted[n - 1],
        ci95,
    })
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly
/// between the two nearest ranks (as numpy's default does).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

/// Welch's t-test of two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Welch's t-test of `a` against `b`; none unless both have two values or
/// more. Two groups without any spread are equal (p = 1) or certainly
/// different (p = 0).
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    let (da, db) = (describe(a)?, describe(b)?);
    if da.n < 2 || db.n < 2 {
        return None;
    }
    let (va, vb) = (da.std.powi(2) / da.n as f64, db.std.powi(2) / db.n as f64);
    let se2 = va + vb;
    if se2 == 0.0 {
        let same = da.mean == db.mean;
        return Some(Welch {
            t: if same { 0.0 } else { f64::INFINITY },
            df: (da.n + db.n - 2) as f64,
            p: if same { 1.0 } else { 0.0 },
        });
    }
    let t = (da.mean - db.mean) / se2.sqrt();
    let df = se2.powi(2) / (va.powi(2) / (da.n - 1) as f64 + vb.powi(2) / (db.n - 1) as f64);
    Some(Welch {
        t,
        df,
        p: two_sided_p(t, df),
    })
}

/// The 95% confidence interval of mean(a) / mean(b), by the delta method
/// with Welch–Satterthwaite degrees of freedom; none unless both have two
/// values or more and mean(b) is not 0.
pub fn ratio_ci95(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    let (da, db) = (describe(a)?, describe(b)?);
    if da.n < 2 || db.n < 2 || db.mean == 0.0 {
        return None;
    }
    let r = da.mean / db.mean;
    // Var(r) ≈ (Var(mean a) + r² Var(mean b)) / mean(b)².
    let va = da.std.powi(2) / da.n as f64;
    let vb = r * r * db.std.powi(2) / db.n as f64;
    let se2 = va + vb;
    if se2 == 0.0 {
        return Some((r, r));
    }
    let df = se2.powi(2) / (va.powi(2) / (da.n - 1) as f64 + vb.powi(2) / (db.n - 1) as f64);
    let half = t_quantile(0.975, df) * se2.sqrt() / db.mean.abs();
    Some((r - half, r + half))
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom.
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    inc_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0)
}

/// The `p` quantile (0.5 < p < 1) of Student's t with `df` degrees of
/// freedom, by bisection on [`two_sided_p`].
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let tail = 2.0 * (1.0 - p);
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while two_sided_p(hi, df) > tail && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if two_sided_p(mid, df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    (lo + hi) / 2.0
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b).
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a+1)/(a+b+2); use the
    // symmetry I_x(a,b) = 1 − I_{1−x}(b,a) otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// Lentz's evaluation of the incomplete beta continued fraction.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..300 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + even * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + even / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        f *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + odd * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + odd / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        f *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn description_matches_hand_computed_values() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample variance 32/7.
        let d = describe(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("values");
        assert_eq!(d.n, 8);
        assert_eq!(d.mean, 5.0);
        assert_eq!(d.median, 4.5);
        assert!(close(d.std, (32.0_f64 / 7.0).sqrt(), 1e-12));
        assert_eq!((d.min, d.max), (2.0, 9.0));
        // t(0.975, 7) = 2.364624; half width = 2.364624 * 2.138090 / sqrt(8).
        let (lo, hi) = d.ci95.expect("ci");
        assert!(close(hi - 5.0, 1.787_488, 1e-5), "{hi}");
        assert!(close(5.0 - lo, 1.787_488, 1e-5), "{lo}");
        let one = describe(&[3.0]).expect("one");
        assert_eq!((one.std, one.ci95), (0.0, None));
        assert_eq!(describe(&[]), None);
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, t) in [
            (1.0, 12.706_205),
            (2.0, 4.302_653),
            (4.0, 2.776_445),
            (9.0, 2.262_157),
            (29.0, 2.045_230),
            (1000.0, 1.962_339),
        ] {
            let q = t_quantile(0.975, df);
            assert!(close(q, t, 1e-5), "df {df}: {q} vs {t}");
        }
    }

    #[test]
    fn welch_matches_a_hand_computed_example() {
        // a: mean 20, var 2.5, n 5; b: mean 22, var 2.5/3, n 4.
        // se² = 0.5 + 0.208333 = 0.708333; t = −2/√0.708333 = −2.376354;
        // df = 0.708333² / (0.5²/4 + 0.208333²/3) = 6.518797.
        let a = [18.0, 19.0, 20.0, 21.0, 22.0];
        let b = [21.0, 21.5, 22.5, 23.0];
        let w = welch(&a, &b).expect("test");
        assert!(close(w.t, -2.376_354, 1e-6), "{w:?}");
        assert!(close(w.df, 6.518_797, 1e-6), "{w:?}");
        // Two-sided p: 0.051743 (the t density integrated numerically).
        assert!(close(w.p, 0.051_743, 1e-6), "{w:?}");
        assert_eq!(welch(&[1.0], &b), None);
        assert_eq!(welch(&[1.0, 1.0], &[1.0, 1.0]).map(|w| w.p), Some(1.0));
        assert_eq!(welch(&[1.0, 1.0], &[2.0, 2.0]).map(|w| w.p), Some(0.0));
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&s, 0.5), 2.5);
        assert_eq!(percentile_sorted(&s, 0.0), 1.0);
        assert_eq!(percentile_sorted(&s, 1.0), 4.0);
        assert!(close(percentile_sorted(&s, 0.99), 3.97, 1e-12));
    }

    #[test]
    fn the_ratio_interval_holds_the_ratio_and_widens_with_spread() {
        let base = [100.0, 102.0, 98.0, 101.0, 99.0];
        let tight = [110.0, 110.5, 109.5, 110.2, 109.8];
        let (lo, hi) = ratio_ci95(&tight, &base).expect("an interval");
        assert!(lo < 1.1 && 1.1 < hi && lo > 1.07 && hi < 1.13, "{lo} {hi}");
        let loose = [90.0, 130.0, 100.0, 120.0, 110.0];
        let (lo2, hi2) = ratio_ci95(&loose, &base).expect("an interval");
        assert!(hi2 - lo2 > hi - lo);
        assert_eq!(ratio_ci95(&[1.0], &base), None);
        assert_eq!(ratio_ci95(&tight, &[0.0, 0.0]), None);
        assert_eq!(ratio_ci95(&[2.0, 2.0], &[1.0, 1.0]), Some((2.0, 2.0)));
    }
}
