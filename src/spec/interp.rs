//! Which input rows an upsampled row reads, along one axis, as PyTorch's kernels compute them.
//!
//! ATen finds the source of output row `o` in floating point (`ATen/native/UpSample.h`):
//! - **nearest**: `min(floorf(o * scale), in - 1)` in float32 whatever the tensor's dtype, where
//!   `scale` is `(float)(1.0 / scale_factor)` when nn.Upsample was given a `scale_factor` (PyTorch
//!   passes it to the kernel) and `(float)in / out` when it was given a `size`; `out == in` copies
//!   and `out == 2 * in` shifts, without floats.
//! - **linear** (linear, bilinear, trilinear; one axis at a time): `src = scale * (o + 0.5) - 0.5`
//!   clamped at 0 (`align_corners` false) or `src = o * (in - 1) / (out - 1)` (true), in the
//!   tensor's float type; the output reads row `i0 = min(floorf(src), in - 1)` and, where the
//!   weight `src - i0` is not zero, row `i0 + 1`.
//!
//! Where the exact position falls on a row (a linear upsampling by 3: output row 1 sits exactly on
//! input row 0), float rounding decides whether the next row gets a weight of 6e-8 or none, and
//! the answer differs between float32 and float64 and between kernels that fuse the multiply and
//! add (CUDA) and those that do not. [`Interp::ambiguity`] finds such a row, so the service
//! refuses the layer rather than answer for one of them; everywhere else every such evaluation
//! reads the same rows, and [`Interp::rows`] gives them.

/// The most output rows an axis's float evaluations are compared over (beyond, a linear
/// upsampling is refused unless it copies, and per-layer ranges are not fitted).
pub const MAX_CHECKED_ROWS: u64 = 1 << 22;

/// One axis of an upsampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interp {
    pub input: u64,
    pub output: u64,
    /// The `scale_factor` nn.Upsample was given for this axis (None: a `size`).
    pub scale: Option<f64>,
    pub linear: bool,
    pub align_corners: bool,
}

/// The ways PyTorch's kernels evaluate a linear source position: float32 or float64, the
/// multiply and the subtraction rounded apart or fused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Float32,
    Float32Fused,
    Float64,
    Float64Fused,
}

const ARITHS: [Arith; 4] = [Arith::Float32, Arith::Float32Fused, Arith::Float64, Arith::Float64Fused];

/// An output row whose rows depend on the float arithmetic.
#[derive(Clone, Debug, PartialEq)]
pub struct Ambiguity {
    pub row: u64,
    /// float32's (first row, last row).
    /// The first evaluation that differs from float32's: (arithmetic, first row, last row).
    pub float32: (u64, u64),
    pub other: (Arith, u64, u64),
}

/// `floor((u*i + c)/d)` for the first and the last row read: the per-layer range's form.
pub type Floor = (i64, i64, i64);

impl Interp {
    /// The first and last input rows output row `o` reads (one row, or two neighbours), as
    /// float32 kernels compute them (every evaluation agrees where [`Interp::ambiguity`] is None).
    pub fn rows(&self, o: u64) -> (u64, u64) {
        self.rows_in(o, Arith::Float32)
    }

    fn rows_in(&self, o: u64, arith: Arith) -> (u64, u64) {
        let (n, m) = (self.input, self.output);
        if m == n {
            return (o, o);
        }
        if !self.linear {
            if m == 2 * n {
                return (o >> 1, o >> 1);
            }
            let scale: f32 = self.compute_scales_value();
            let i = ((o as f32) * scale).floor() as u64;
            let i = i.min(n - 1);
            return (i, i);
        }
        let (i0, weight) = match arith {
            Arith::Float32 => self.linear_source::<f32>(o, false),
            Arith::Float32Fused => self.linear_source::<f32>(o, true),
            Arith::Float64 => self.linear_source::<f64>(o, false),
            Arith::Float64Fused => self.linear_source::<f64>(o, true),
        };
        (i0, if weight && i0 < n - 1 { i0 + 1 } else { i0 })
    }

    /// A linear mode's row `i0` and whether row `i0 + 1` gets a weight, computed in `F` as ATen's
    /// `area_pixel_compute_scale`, `area_pixel_compute_source_index` and
    /// `guard_index_and_lambda` do (`fused`: the multiply and the subtraction in one rounding).
    fn linear_source<F: Float>(&self, o: u64, fused: bool) -> (u64, bool) {
        let (n, m) = (self.input, self.output);
        let scale = if self.align_corners {
            if m > 1 {
                F::of(n - 1) / F::of(m - 1)
            } else {
                F::ZERO
            }
        } else {
            self.compute_scales_value()
        };
        let src = if self.align_corners {
            scale * F::of(o)
        } else {
            let t = F::of(o) + F::HALF;
            let v = if fused {
                scale.fma(t, F::ZERO - F::HALF)
            } else {
                scale * t - F::HALF
            };
            if v < F::ZERO {
                F::ZERO
            } else {
                v
            }
        };
        let i0 = src.floorf().min(n - 1);
        let w = src - F::of(i0);
        (i0, w > F::ZERO)
    }

    /// ATen's `compute_scales_value` in `F`: `1/scale_factor` given one, else `in/out`.
    fn compute_scales_value<F: Float>(&self) -> F {
        match self.scale {
            Some(s) if s > 0.0 => F::narrow(1.0 / s),
            _ => F::of(self.input) / F::of(self.output),
        }
    }

    /// Whether the float evaluations are exact: a copy, or a power-of-two factor onto at most
    /// [`MAX_CHECKED_ROWS`] rows, where every position is a dyadic fraction that float32 holds
    /// exactly (past 2^23 rows float32 does not hold `o + 0.5`, past 2^24 not `o`: ATen's
    /// kernels then read rows exact arithmetic does not).
    fn exact(&self) -> bool {
        let (n, m) = (self.input, self.output);
        m == n
            || (m <= MAX_CHECKED_ROWS
                && !self.align_corners
                && m % n == 0
                && (m / n).is_power_of_two()
                && self.scale.is_none_or(|s| s == (m / n) as f64))
    }

    /// The first output row whose rows differ between PyTorch's float evaluations (None: they
    /// agree on every row). Nearest is always float32 and never ambiguous. Err: the axis is
    /// longer than [`MAX_CHECKED_ROWS`] and not exact.
    pub fn ambiguity(&self) -> Result<Option<Ambiguity>, u64> {
        if !self.linear || self.exact() {
            return Ok(None);
        }
        if self.output > MAX_CHECKED_ROWS {
            return Err(MAX_CHECKED_ROWS);
        }
        for o in 0..self.output {
            let base = self.rows_in(o, Arith::Float32);
            for arith in &ARITHS[1..] {
                let r = self.rows_in(o, *arith);
                if r != base {
                    return Ok(Some(Ambiguity {
                        row: o,
                        float32: base,
                        other: (*arith, r.0, r.1),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The input rows per output row as a reduced fraction p/q, as the kernel means it (the
    /// scale_factor given, a size's ratio, align_corners' (in-1)/(out-1)); None when it is not a
    /// fraction of small terms or is zero.
    fn ratio(&self) -> Option<(i64, i64)> {
        let (n, m) = (self.input as i64, self.output as i64);
        let (p, q) = if n == m || (!self.linear && m == 2 * n) {
            (n, m)
        } else if self.linear && self.align_corners {
            (n - 1, m - 1)
        } else {
            match self.scale {
                // scale_factor = num/den exactly: the kernel's step is den/num
                Some(s) => (1..=1 << 12).find_map(|den: i64| {
                    let num = (s * den as f64).round();
                    (num >= 1.0 && num / den as f64 == s).then_some((den, num as i64))
                })?,
                None => (n, m),
            }
        };
        if p <= 0 || q <= 0 {
            return None;
        }
        let g = gcd(p, q);
        Some((p / g, q / g))
    }

    /// The per-layer range's ends, `floor((u*i + c)/d)` for the first row and for the last row
    /// read, when they give [`Interp::rows`] (clamped to the input) at every output row; None
    /// otherwise (the exact sets are still exact).
    pub fn floors(&self) -> Option<[Floor; 2]> {
        if self.input == self.output {
            return Some([(1, 0, 1), (1, 0, 1)]);
        }
        if self.output > MAX_CHECKED_ROWS {
            return None;
        }
        let (p, q) = self.ratio()?;
        let ends: [Floor; 2] = match (self.linear, self.align_corners) {
            (false, _) => [(p, 0, q), (p, 0, q)],
            // (with one of p, q even the numerator is odd: one less floors the same, and
            // reads floor((i+1)/2) for 2)
            (true, false) => [(2 * p, p - q, 2 * q), (2 * p, p + q - (p + q) % 2, 2 * q)],
            (true, true) => [(p, 0, q), (p, q - 1, q)],
        };
        let last = self.input as i64 - 1;
        let at = |(u, c, d): Floor, o: i64| (u * o + c).div_euclid(d).clamp(0, last) as u64;
        (0..self.output as i64)
            .all(|o| (at(ends[0], o), at(ends[1], o)) == self.rows(o as u64))
            .then_some(ends)
    }
}

/// float32 and float64 as ATen's kernels use them.
trait Float:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const HALF: Self;
    /// An integer converted as C++ converts an int64_t (rounded to nearest).
    fn of(n: u64) -> Self;
    /// A float64 cast to this type (`static_cast<scalar_t>`).
    fn narrow(x: f64) -> Self;
    fn fma(self, a: Self, b: Self) -> Self;
    /// `floorf(x)` as an index: ATen calls the float32 floor, so a float64 position is rounded
    /// to float32 first.
    fn floorf(self) -> u64;
}

/// The two impls differ only in `floorf`.
macro_rules! float {
    ($t:ty, $floorf:expr) => {
        impl Float for $t {
            const ZERO: $t = 0.0;
            const HALF: $t = 0.5;
            fn of(n: u64) -> $t {
                n as $t
            }
            fn narrow(x: f64) -> $t {
                x as $t
            }
            fn fma(self, a: $t, b: $t) -> $t {
                self.mul_add(a, b)
            }
            fn floorf(self) -> u64 {
                $floorf(self)
            }
        }
    };
}
float!(f32, |x: f32| x.floor() as u64);
float!(f64, |x: f64| (x as f32).floor() as u64);

/// The greatest common divisor (0 with 0: the other's magnitude).
pub(crate) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// PyTorch's output size for `input` rows and a `scale_factor`: `floor(input * scale)` in
/// float64 (ATen's `compute_output_size`).
pub fn scaled_size(input: u64, scale: f64) -> u64 {
    (input as f64 * scale).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(input: u64, output: u64, scale: Option<f64>, align_corners: bool) -> Interp {
        Interp {
            input,
            output,
            scale,
            linear: true,
            align_corners,
        }
    }

    #[test]
    fn by_hand() {
        // bilinear x2: (o + 0.5)/2 - 0.5; row 0 clamps to 0 and reads row 0 alone, the last
        // reads the last alone
        let x2 = linear(4, 8, Some(2.0), false);
        let rows: Vec<_> = (0..8).map(|o| x2.rows(o)).collect();
        assert_eq!(rows, [(0, 0), (0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (3, 3)]);
        assert_eq!(x2.ambiguity(), Ok(None));
        // x6: 1/6 is not a float, but no position is within rounding of a row
        assert_eq!(linear(5, 30, Some(6.0), false).ambiguity(), Ok(None));
        // x3: output row 1 is exactly input row 0 ((1 + 0.5)/3 - 0.5 = 0); float32's 1/3 is
        // 0.33333334, times 1.5 rounds back to 0.5 (reads row 0 alone), but fused with the
        // subtraction leaves 1.5e-8 (row 1 gets a weight: what PyTorch's CPU kernel computes)
        let a = linear(4, 12, Some(3.0), false).ambiguity().unwrap().unwrap();
        assert_eq!((a.row, a.float32, a.other), (1, (0, 0), (Arith::Float32Fused, 0, 1)));
        // 2 -> 3 (a size): src = (o + 0.5) * 2/3 - 0.5 = 0, 0.5, 1.1667 -> no position on a row
        let s = linear(2, 3, None, false);
        assert_eq!(s.ambiguity(), Ok(None));
        assert_eq!((0..3).map(|o| s.rows(o)).collect::<Vec<_>>(), [(0, 0), (0, 1), (1, 1)]);
        // align_corners: 5 -> 9 steps by exactly 1/2
        let ac = linear(5, 9, None, true);
        assert_eq!(ac.ambiguity(), Ok(None));
        assert_eq!(
            (0..9).map(|o| ac.rows(o)).collect::<Vec<_>>(),
            [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4), (4, 4)]
        );
        assert_eq!(ac.floors(), Some([(1, 0, 2), (1, 1, 2)]));
        // nearest 2 -> 3 by a size: floorf(o * 0.6666667) = 0, 0, 1
        let n = Interp {
            input: 2,
            output: 3,
            scale: None,
            linear: false,
            align_corners: false,
        };
        assert_eq!((0..3).map(|o| n.rows(o).0).collect::<Vec<_>>(), [0, 0, 1]);
        assert_eq!(n.floors(), Some([(2, 0, 3), (2, 0, 3)]));
        // nearest by scale_factor 1.5 on 5 rows: floor(7.5) = 7 outputs, the kernel's step 1/1.5
        assert_eq!(scaled_size(5, 1.5), 7);
        let n = Interp {
            input: 5,
            output: 7,
            scale: Some(1.5),
            linear: false,
            align_corners: false,
        };
        assert_eq!((0..7).map(|o| n.rows(o).0).collect::<Vec<_>>(), [0, 0, 1, 2, 2, 3, 4]);
        assert_eq!(n.ratio(), Some((2, 3)));
        // downsampling by nearest skips rows
        let d = Interp {
            input: 10,
            output: 3,
            scale: None,
            linear: false,
            align_corners: false,
        };
        assert_eq!((0..3).map(|o| d.rows(o).0).collect::<Vec<_>>(), [0, 3, 6]);
        // nearest by 1024 onto 2^30 positions: float32 rounds the index 2^25 - 1 up to 2^25, so
        // PyTorch reads row 2^15 where floor(o/1024) is 2^15 - 1; no single floor then
        let big = Interp {
            input: 1 << 20,
            output: 1 << 30,
            scale: Some(1024.0),
            linear: false,
            align_corners: false,
        };
        assert_eq!(big.rows((1 << 25) - 1), (1 << 15, 1 << 15));
        assert_eq!(big.floors(), None);
        // a linear upsampling that long is refused unless it is a copy
        assert_eq!(linear(1 << 21, 1 << 23, Some(4.0), false).ambiguity(), Err(MAX_CHECKED_ROWS));
    }
}
