//! Causal online prediction of a breathing surrogate over a fixed horizon.
//!
//! A predictor takes one uniformly sampled surrogate vector at a time (3 coordinates per
//! marker, mm) and returns its forecast `horizon` samples later, made only from the samples
//! pushed so far: nothing here ever sees a sample before it is pushed, and a training pair is
//! used only once its target has arrived.
//!
//! - [`RidgePredictor`]: per-horizon linear regression of the displacement
//!   `y(k+h) − y(k)` on a 4 s history of all coordinates, fitted by exponentially forgotten
//!   ridge regression. Features, for every coordinate: the differences `y(k) − y(k−j)` over
//!   short lags (1, 2, 3, 5, 8 samples: velocity and its change); for the breathing signal (the
//!   projection on the first principal axis of the first samples, which all coordinates of a
//!   breathing marker set share) the differences over long lags (every 2nd sample from 10 to
//!   40: one breathing cycle, hence the phase); and `y(k)` minus its running mean (where in
//!   the cycle, and baseline drift); plus a constant. Sufficient statistics `G = Σ λ^a x xᵀ`,
//!   `C = Σ λ^a x (y(k+h)−y(k))ᵀ` are updated per sample in O(d²) and the weights refit by
//!   Cholesky every few samples: `W = (G + α·tr(G)/d·I)⁻¹ C`. With [`RidgeConfig::huber`]
//!   set, a pair whose residual under the current weights exceeds that many running residual
//!   RMS enters `G` and `C` with weight `limit/residual` (Huber). Why this and not a recurrent
//!   network: it is convex (no initialisation or learning rate to tune), its cost per sample
//!   is microseconds, and its parameters were chosen on the 30–60 s tuning parts only
//!   (echo-state reservoir features added to these did worse there: README).
//! - [`AnalogPredictor`]: nearest-neighbour (analog) forecasting over the last minute.
//! - [`EnsemblePredictor`] (the default of `ionguide predict`): the three above combined with
//!   weights fitted online on their own past errors.
//! - [`StackPredictor`]: any members combined by weights fitted online on their forecast
//!   displacements; [`StackPredictor::selected`] is the variant with the lowest nRMSE on the
//!   30–60 s tuning parts (`--method stack`), no better than the ensemble on the scored part.
//! - [`RlsBaseline`]: the causal linear baseline of issue 14 — per coordinate, recursive least
//!   squares on the last 12 samples.
//! - [`Hold`]: no prediction (the current sample).
//! - [`evaluate`]: the published protocol (Pohl et al. 2022) that scores them.

pub mod correlation;
pub mod evaluate;

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Why a predictor cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// A parameter is out of range.
    #[error("invalid predictor parameter {name} = {value}: {reason}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// Why.
        reason: &'static str,
    },
}

/// A causal online predictor.
pub trait OnlinePredictor {
    /// Coordinates per sample.
    fn dim(&self) -> usize;
    /// Prediction horizon, samples.
    fn horizon(&self) -> usize;
    /// Takes the next sample (`dim` values, mm) and writes into `out` (`dim` values) the
    /// forecast of the sample `horizon` steps later. Panics if the lengths differ from
    /// [`dim`](Self::dim) (a programming error, not input).
    fn step(&mut self, sample: &[f64], out: &mut [f64]);
}

impl<P: OnlinePredictor + ?Sized> OnlinePredictor for Box<P> {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn horizon(&self) -> usize {
        (**self).horizon()
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        (**self).step(sample, out)
    }
}

/// No prediction: the forecast is the current sample.
#[derive(Debug, Clone)]
pub struct Hold {
    dim: usize,
    horizon: usize,
}

impl Hold {
    /// For `dim` coordinates at horizon `horizon` samples.
    pub fn new(dim: usize, horizon: usize) -> Self {
        Self { dim, horizon }
    }
}

impl OnlinePredictor for Hold {
    fn dim(&self) -> usize {
        self.dim
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        out.copy_from_slice(sample);
    }
}

/// A ring of the last `cap` vectors of `dim` values, newest last.
#[derive(Debug, Clone)]
struct Ring {
    dim: usize,
    cap: usize,
    data: Vec<f64>,
    /// Samples pushed in all.
    count: usize,
}

impl Ring {
    fn new(dim: usize, cap: usize) -> Self {
        Self {
            dim,
            cap,
            data: vec![0.0; dim * cap],
            count: 0,
        }
    }
    fn push(&mut self, v: &[f64]) {
        let slot = self.count % self.cap;
        self.data[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(v);
        self.count += 1;
    }
    /// The vector pushed `back` steps before the newest (0 = newest); needs `back < cap` and
    /// `back < count`.
    fn get(&self, back: usize) -> &[f64] {
        let slot = (self.count - 1 - back) % self.cap;
        &self.data[slot * self.dim..(slot + 1) * self.dim]
    }
}

/// The causal linear baseline: for each coordinate separately, recursive least squares with
/// forgetting `0.999` on the last 12 samples (the 11 differences `y(k) − y(k−j)` and a
/// constant), predicting `y(k+h) − y(k)`; each pair is learnt when its target arrives.
#[derive(Debug, Clone)]
pub struct RlsBaseline {
    dim: usize,
    horizon: usize,
    lambda: f64,
    samples: Ring,
    /// Per coordinate: weights (12) and inverse correlation matrix (12 × 12).
    w: Vec<[f64; 12]>,
    p: Vec<[[f64; 12]; 12]>,
}

impl RlsBaseline {
    /// Samples the baseline looks back over.
    pub const WINDOW: usize = 12;

    /// For `dim` coordinates at horizon `horizon` samples (≥ 1).
    pub fn new(dim: usize, horizon: usize) -> Result<Self, PredictError> {
        check_dims(dim, horizon)?;
        let mut p0 = [[0.0; 12]; 12];
        for (i, row) in p0.iter_mut().enumerate() {
            // A weak prior (P₀ = 100·I): the weights start at zero, i.e. at no prediction.
            row[i] = 100.0;
        }
        Ok(Self {
            dim,
            horizon,
            lambda: 0.999,
            samples: Ring::new(dim, horizon + Self::WINDOW + 1),
            w: vec![[0.0; 12]; dim],
            p: vec![p0; dim],
        })
    }

    /// Features of coordinate `c` at `back` samples before the newest.
    fn features(&self, c: usize, back: usize) -> [f64; 12] {
        let mut x = [1.0; 12];
        let now = self.samples.get(back)[c];
        for (j, slot) in x.iter_mut().take(11).enumerate() {
            *slot = now - self.samples.get(back + j + 1)[c];
        }
        x
    }
}

fn check_dims(dim: usize, horizon: usize) -> Result<(), PredictError> {
    if dim == 0 {
        return Err(PredictError::BadParameter {
            name: "dim",
            value: 0.0,
            reason: "at least one coordinate",
        });
    }
    if horizon == 0 {
        return Err(PredictError::BadParameter {
            name: "horizon",
            value: 0.0,
            reason: "at least one sample ahead",
        });
    }
    Ok(())
}

impl OnlinePredictor for RlsBaseline {
    fn dim(&self) -> usize {
        self.dim
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        assert_eq!(sample.len(), self.dim);
        assert_eq!(out.len(), self.dim);
        self.samples.push(sample);
        let n = self.samples.count;
        let h = self.horizon;
        for c in 0..self.dim {
            // Learn the pair whose target (this sample) has just arrived.
            if n > h + Self::WINDOW {
                let x = self.features(c, h);
                let d = sample[c] - self.samples.get(h)[c];
                let p = &mut self.p[c];
                let mut px = [0.0; 12];
                for i in 0..12 {
                    px[i] = (0..12).map(|j| p[i][j] * x[j]).sum();
                }
                let denom = self.lambda + (0..12).map(|i| x[i] * px[i]).sum::<f64>();
                let err = d - (0..12).map(|i| self.w[c][i] * x[i]).sum::<f64>();
                for i in 0..12 {
                    let g = px[i] / denom;
                    self.w[c][i] += g * err;
                    for j in 0..12 {
                        p[i][j] = (p[i][j] - g * px[j]) / self.lambda;
                    }
                }
            }
            out[c] = if n > Self::WINDOW {
                let x = self.features(c, 0);
                sample[c] + (0..12).map(|i| self.w[c][i] * x[i]).sum::<f64>()
            } else {
                sample[c]
            };
        }
    }
}

/// Parameters of [`RidgePredictor`]; the defaults were chosen on the 30–60 s tuning parts of
/// the ExtMarker recordings (README, "Motion prediction").
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeConfig {
    /// Lags (samples) of the per-coordinate differences.
    pub short_lags: Vec<usize>,
    /// Lags (samples) of the breathing signal's differences.
    pub long_lags: Vec<usize>,
    /// Forgetting factor of the regression statistics per sample (0.999 at 10 Hz: a memory
    /// of about 100 s).
    pub forgetting: f64,
    /// Ridge strength, relative to the mean diagonal of the Gram matrix.
    pub ridge: f64,
    /// Forgetting factor of the running mean (0.995 at 10 Hz: about 20 s).
    pub mean_forgetting: f64,
    /// Samples whose covariance sets the breathing axis (100 at 10 Hz: 10 s, two or more
    /// breaths); no regression before.
    pub axis_samples: usize,
    /// Refit the weights every this many samples.
    pub refit_every: usize,
    /// Huber threshold of a training pair's residual, in running residual RMS (∞: plain
    /// least squares).
    pub huber: f64,
}

impl Default for RidgeConfig {
    fn default() -> Self {
        Self {
            short_lags: vec![1, 2, 3, 5, 8],
            long_lags: (10..=40).step_by(2).collect(),
            forgetting: 0.999,
            ridge: 1e-2,
            mean_forgetting: 0.995,
            axis_samples: 100,
            refit_every: 5,
            huber: f64::INFINITY,
        }
    }
}

/// Ridge regression on a long history, with forgetting (see the module doc).
#[derive(Debug, Clone)]
pub struct RidgePredictor {
    cfg: RidgeConfig,
    dim: usize,
    horizon: usize,
    /// Feature count.
    d: usize,
    /// Samples back to the oldest needed (features of the pair `horizon` back).
    samples: Ring,
    /// Feature vectors of the last `horizon + 1` samples.
    feats: Ring,
    mean: Vec<f64>,
    /// First-moment and second-moment sums for the breathing axis, then the axis.
    axis_sum: Vec<f64>,
    axis_sum2: DMatrix<f64>,
    axis: Option<Vec<f64>>,
    gram: DMatrix<f64>,
    cross: DMatrix<f64>,
    weights: Option<DMatrix<f64>>,
    pairs: usize,
    x: DVector<f64>,
    /// Running mean square of the (clipped) training residual, mm².
    resid_ms: f64,
}

impl RidgePredictor {
    /// For `dim` coordinates at horizon `horizon` samples.
    pub fn new(dim: usize, horizon: usize, cfg: RidgeConfig) -> Result<Self, PredictError> {
        check_dims(dim, horizon)?;
        let bad = |name, value: f64, reason| PredictError::BadParameter { name, value, reason };
        if !(cfg.forgetting > 0.0 && cfg.forgetting <= 1.0) {
            return Err(bad("forgetting", cfg.forgetting, "must be in (0, 1]"));
        }
        if !(cfg.mean_forgetting > 0.0 && cfg.mean_forgetting < 1.0) {
            return Err(bad("mean_forgetting", cfg.mean_forgetting, "must be in (0, 1)"));
        }
        if !(cfg.ridge > 0.0 && cfg.ridge.is_finite()) {
            return Err(bad("ridge", cfg.ridge, "must be finite and > 0"));
        }
        if cfg.refit_every == 0 {
            return Err(bad("refit_every", 0.0, "must be ≥ 1"));
        }
        if cfg.huber.is_nan() || cfg.huber <= 0.0 {
            return Err(bad("huber", cfg.huber, "must be > 0 (∞: off)"));
        }
        if cfg.axis_samples < 2 && !cfg.long_lags.is_empty() {
            return Err(bad(
                "axis_samples",
                cfg.axis_samples as f64,
                "at least 2 to find the breathing axis",
            ));
        }
        if cfg.short_lags.iter().chain(&cfg.long_lags).any(|&l| l == 0) {
            return Err(bad("lag", 0.0, "lags are ≥ 1 sample"));
        }
        let max_lag = cfg
            .short_lags
            .iter()
            .chain(&cfg.long_lags)
            .copied()
            .max()
            .unwrap_or(0);
        let d = dim * cfg.short_lags.len() + cfg.long_lags.len() + dim + 1;
        Ok(Self {
            resid_ms: 0.0,
            dim,
            horizon,
            d,
            samples: Ring::new(dim, max_lag + horizon + 1),
            feats: Ring::new(d, horizon + 1),
            mean: vec![0.0; dim],
            axis_sum: vec![0.0; dim],
            axis_sum2: DMatrix::zeros(dim, dim),
            axis: None,
            gram: DMatrix::zeros(d, d),
            cross: DMatrix::zeros(d, dim),
            weights: None,
            pairs: 0,
            x: DVector::zeros(d),
            cfg,
        })
    }

    /// Features used per sample.
    pub fn feature_count(&self) -> usize {
        self.d
    }

    fn max_lag(&self) -> usize {
        self.samples.cap - self.horizon - 1
    }

    /// Builds the features of the newest sample into `self.x`; false while history is short.
    fn build_features(&mut self) -> bool {
        let Some(axis) = &self.axis else {
            return false;
        };
        if self.samples.count <= self.max_lag() {
            return false;
        }
        let now = self.samples.get(0);
        let mut k = 0;
        for &l in &self.cfg.short_lags {
            let past = self.samples.get(l);
            for c in 0..self.dim {
                self.x[k] = now[c] - past[c];
                k += 1;
            }
        }
        let s_now: f64 = now.iter().zip(axis).map(|(a, b)| a * b).sum();
        for &l in &self.cfg.long_lags {
            let s_past: f64 = self.samples.get(l).iter().zip(axis).map(|(a, b)| a * b).sum();
            self.x[k] = s_now - s_past;
            k += 1;
        }
        for (v, m) in now.iter().zip(&self.mean) {
            self.x[k] = v - m;
            k += 1;
        }
        self.x[k] = 1.0;
        true
    }

    fn refit(&mut self) {
        let scale = self.gram.trace() / self.d as f64;
        let mut a = self.gram.clone();
        let reg = self.cfg.ridge * scale.max(f64::MIN_POSITIVE);
        for i in 0..self.d {
            a[(i, i)] += reg;
        }
        // G + αI is positive definite for α > 0; should rounding ever break that, the old
        // weights stay.
        if let Some(ch) = a.cholesky() {
            self.weights = Some(ch.solve(&self.cross));
        }
    }
}

impl OnlinePredictor for RidgePredictor {
    fn dim(&self) -> usize {
        self.dim
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        assert_eq!(sample.len(), self.dim);
        assert_eq!(out.len(), self.dim);
        let first = self.samples.count == 0;
        self.samples.push(sample);
        let mf = self.cfg.mean_forgetting;
        for (m, &v) in self.mean.iter_mut().zip(sample) {
            *m = if first { v } else { mf * *m + (1.0 - mf) * v };
        }
        if self.axis.is_none() {
            if self.cfg.long_lags.is_empty() {
                self.axis = Some(vec![0.0; self.dim]);
            } else {
                for i in 0..self.dim {
                    self.axis_sum[i] += sample[i];
                    for j in 0..self.dim {
                        self.axis_sum2[(i, j)] += sample[i] * sample[j];
                    }
                }
                let n = self.samples.count;
                if n >= self.cfg.axis_samples {
                    let nf = n as f64;
                    let mut cov = self.axis_sum2.clone() / nf;
                    for i in 0..self.dim {
                        for j in 0..self.dim {
                            cov[(i, j)] -= self.axis_sum[i] * self.axis_sum[j] / (nf * nf);
                        }
                    }
                    let eig = SymmetricEigen::new(cov);
                    let best = eig.eigenvalues.imax();
                    self.axis = Some(eig.eigenvectors.column(best).iter().copied().collect());
                }
            }
        }
        let have = self.build_features();
        if have {
            self.feats.push(self.x.as_slice());
        }
        // Learn the pair (features h samples ago → this sample) once both exist.
        if have && self.feats.count > self.horizon {
            let lam = self.cfg.forgetting;
            let h = self.horizon;
            let xp = DVector::from_column_slice(self.feats.get(h));
            let past = self.samples.get(h);
            let target =
                DVector::from_iterator(self.dim, sample.iter().zip(past).map(|(now, then)| now - then));
            // Huber: a pair whose residual under the current weights is far beyond the usual
            // (a cough, the patient moving) is weighted down, so it does not bend the fit for
            // the whole memory.
            let mut wt = 1.0;
            if self.cfg.huber.is_finite() {
                if let Some(w) = &self.weights {
                    let r2: f64 = (0..self.dim)
                        .map(|c| (target[c] - w.column(c).dot(&xp)).powi(2))
                        .sum();
                    let lim2 = self.cfg.huber * self.cfg.huber * self.resid_ms;
                    if self.resid_ms > 0.0 && r2 > lim2 {
                        wt = (lim2 / r2).sqrt();
                    }
                    let clipped = if self.resid_ms > 0.0 { r2.min(lim2) } else { r2 };
                    self.resid_ms = if self.resid_ms > 0.0 {
                        0.99 * self.resid_ms + 0.01 * clipped
                    } else {
                        r2
                    };
                }
            }
            // G ← λG + w x xᵀ, C ← λC + w x (Δy)ᵀ.
            self.gram.ger(wt, &xp, &xp, lam);
            self.cross.ger(wt, &xp, &target, lam);
            self.pairs += 1;
            if self.pairs % self.cfg.refit_every == 0 {
                self.refit();
            }
        }
        out.copy_from_slice(sample);
        if let (true, Some(w)) = (have, &self.weights) {
            for (c, o) in out.iter_mut().enumerate() {
                *o += w.column(c).dot(&self.x);
            }
        }
    }
}

/// Parameters of [`AnalogPredictor`] (chosen on the tuning parts, like [`RidgeConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalogConfig {
    /// The pattern: differences `y(k) − y(k−j)` for these lags, every coordinate.
    pub lags: Vec<usize>,
    /// Neighbours averaged.
    pub neighbours: usize,
    /// Past samples searched (600 at 10 Hz: the last minute).
    pub memory: usize,
    /// Forgetting factor of the running mean that places the pattern in the cycle.
    pub mean_forgetting: f64,
}

impl Default for AnalogConfig {
    fn default() -> Self {
        Self {
            lags: (2..=20).step_by(2).collect(),
            neighbours: 10,
            memory: 600,
            mean_forgetting: 0.995,
        }
    }
}

/// Analog (nearest-neighbour) forecasting: the last 2 s of all coordinates, relative to now,
/// and the offset from the running mean, are compared with every such pattern of the last
/// minute whose future `h` samples is already known; the forecast is now plus the
/// inverse-distance-weighted mean of what followed the `neighbours` closest. Non-linear where
/// the regression is linear (inhale and exhale shapes differ), so the two err differently.
#[derive(Debug, Clone)]
pub struct AnalogPredictor {
    cfg: AnalogConfig,
    dim: usize,
    horizon: usize,
    samples: Ring,
    /// Pattern of each of the last samples (NaN-free only once history is long enough).
    patterns: Ring,
    valid_from: usize,
    mean: Vec<f64>,
    pattern: Vec<f64>,
    best: Vec<(f64, usize)>,
    acc: Vec<f64>,
}

impl AnalogPredictor {
    /// For `dim` coordinates at horizon `horizon` samples.
    pub fn new(dim: usize, horizon: usize, cfg: AnalogConfig) -> Result<Self, PredictError> {
        check_dims(dim, horizon)?;
        let bad = |name, value: f64, reason| PredictError::BadParameter { name, value, reason };
        if cfg.neighbours == 0 {
            return Err(bad("neighbours", 0.0, "at least one"));
        }
        if cfg.memory <= horizon + cfg.neighbours {
            return Err(bad(
                "memory",
                cfg.memory as f64,
                "must exceed the horizon plus the neighbours",
            ));
        }
        if !(cfg.mean_forgetting > 0.0 && cfg.mean_forgetting < 1.0) {
            return Err(bad("mean_forgetting", cfg.mean_forgetting, "must be in (0, 1)"));
        }
        if cfg.lags.contains(&0) {
            return Err(bad("lag", 0.0, "lags are ≥ 1 sample"));
        }
        let max_lag = cfg.lags.iter().copied().max().unwrap_or(0);
        let d = dim * (cfg.lags.len() + 1);
        Ok(Self {
            dim,
            horizon,
            samples: Ring::new(dim, cfg.memory.max(max_lag) + 1),
            patterns: Ring::new(d, cfg.memory + 1),
            valid_from: max_lag,
            mean: vec![0.0; dim],
            pattern: vec![0.0; d],
            best: Vec::with_capacity(cfg.neighbours + 1),
            acc: vec![0.0; dim],
            cfg,
        })
    }
}

impl OnlinePredictor for AnalogPredictor {
    fn dim(&self) -> usize {
        self.dim
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        assert_eq!(sample.len(), self.dim);
        assert_eq!(out.len(), self.dim);
        let first = self.samples.count == 0;
        self.samples.push(sample);
        let mf = self.cfg.mean_forgetting;
        for (m, &v) in self.mean.iter_mut().zip(sample) {
            *m = if first { v } else { mf * *m + (1.0 - mf) * v };
        }
        let k = self.samples.count - 1;
        let mut i = 0;
        if k >= self.valid_from {
            for &l in &self.cfg.lags {
                let past = self.samples.get(l);
                for c in 0..self.dim {
                    self.pattern[i] = sample[c] - past[c];
                    i += 1;
                }
            }
        }
        for (v, m) in sample.iter().zip(&self.mean) {
            self.pattern[i] = v - m;
            i += 1;
        }
        self.patterns.push(&self.pattern);
        out.copy_from_slice(sample);
        if k < self.valid_from {
            return;
        }
        // Candidates: patterns `back` samples ago whose future (back − h ≥ 0) is known.
        let h = self.horizon;
        let oldest = (k - self.valid_from).min(self.cfg.memory);
        if oldest < h + self.cfg.neighbours {
            return;
        }
        let kn = self.cfg.neighbours;
        self.best.clear();
        for back in h..=oldest {
            let p = self.patterns.get(back);
            let dist: f64 = p.iter().zip(&self.pattern).map(|(a, b)| (a - b) * (a - b)).sum();
            if self.best.len() < kn || dist < self.best[kn - 1].0 {
                let at = self.best.partition_point(|(d, _)| *d <= dist);
                self.best.insert(at, (dist, back));
                self.best.truncate(kn);
            }
        }
        let mut wsum = 0.0;
        let dim = self.dim;
        let acc = &mut self.acc;
        acc.fill(0.0);
        for &(dist, back) in &self.best {
            // 1e-3 mm²: a floor so an exact repeat does not take all the weight.
            let w = 1.0 / (dist + 1e-3);
            wsum += w;
            let (then, after) = (self.samples.get(back), self.samples.get(back - h));
            for c in 0..dim {
                acc[c] += w * (after[c] - then[c]);
            }
        }
        for c in 0..dim {
            out[c] += acc[c] / wsum;
        }
    }
}

/// The predictor to use: [`RidgePredictor`], [`RlsBaseline`] and [`AnalogPredictor`]
/// combined with weights fitted online — least squares of each sample on the three forecasts
/// made for it `h` samples earlier (forgetting 0.995, ridge 1 % towards equal weights), so a
/// recording where one member errs more shifts weight to the others. Causal like its members.
#[derive(Debug, Clone)]
pub struct EnsemblePredictor {
    dim: usize,
    horizon: usize,
    ridge: RidgePredictor,
    rls: RlsBaseline,
    analog: AnalogPredictor,
    /// The members' forecasts of the last `h + 1` samples, 3 × dim each.
    past: Ring,
    a: nalgebra::Matrix3<f64>,
    b: nalgebra::Vector3<f64>,
    w: nalgebra::Vector3<f64>,
    scratch: Vec<f64>,
}

impl EnsemblePredictor {
    const FORGETTING: f64 = 0.995;
    const PULL: f64 = 1e-2;

    /// For `dim` coordinates at horizon `horizon` samples, members at their defaults.
    pub fn new(dim: usize, horizon: usize) -> Result<Self, PredictError> {
        Ok(Self {
            dim,
            horizon,
            ridge: RidgePredictor::new(dim, horizon, RidgeConfig::default())?,
            rls: RlsBaseline::new(dim, horizon)?,
            analog: AnalogPredictor::new(dim, horizon, AnalogConfig::default())?,
            past: Ring::new(3 * dim, horizon + 1),
            a: nalgebra::Matrix3::zeros(),
            b: nalgebra::Vector3::zeros(),
            w: nalgebra::Vector3::repeat(1.0 / 3.0),
            scratch: vec![0.0; 3 * dim],
        })
    }

    /// The current member weights (ridge, RLS, analog).
    pub fn weights(&self) -> [f64; 3] {
        [self.w[0], self.w[1], self.w[2]]
    }
}

impl OnlinePredictor for EnsemblePredictor {
    fn dim(&self) -> usize {
        self.dim
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        assert_eq!(sample.len(), self.dim);
        assert_eq!(out.len(), self.dim);
        let dim = self.dim;
        let (r, rest) = self.scratch.split_at_mut(dim);
        let (l, a) = rest.split_at_mut(dim);
        self.ridge.step(sample, r);
        self.rls.step(sample, l);
        self.analog.step(sample, a);
        // Learn the weights from the forecasts made for this sample.
        if self.past.count > self.horizon {
            let f = self.past.get(self.horizon - 1);
            let lam = Self::FORGETTING;
            self.a *= lam;
            self.b *= lam;
            for c in 0..dim {
                let x = nalgebra::Vector3::new(f[c], f[dim + c], f[2 * dim + c]);
                self.a += x * x.transpose();
                self.b += x * sample[c];
            }
            let s = self.a.trace() / 3.0;
            if s > 0.0 {
                let reg = Self::PULL * s;
                let m = self.a + nalgebra::Matrix3::identity() * reg;
                let rhs = self.b + nalgebra::Vector3::repeat(reg / 3.0);
                if let Some(w) = m.cholesky().map(|ch| ch.solve(&rhs)) {
                    self.w = w;
                }
            }
        }
        self.past.push(&self.scratch);
        for (c, o) in out.iter_mut().enumerate() {
            *o = self.w[0] * self.scratch[c]
                + self.w[1] * self.scratch[dim + c]
                + self.w[2] * self.scratch[2 * dim + c];
        }
    }
}

/// Any set of members combined with weights fitted online, like [`EnsemblePredictor`] but on
/// displacements: least squares of the displacement `y(k) − y(k−h)` on the members' forecast
/// displacements made `h` samples earlier, exponentially forgotten, with a pull towards equal
/// weights. On displacements the position offset (which every member gets right) does not
/// dominate the fit, and weights summing below one shrink the forecast towards holding when
/// all members err. Causal like its members.
///
/// [`StackPredictor::selected`] is the variant chosen on the 30–60 s tuning parts (README,
/// "Motion prediction"); it is `ionguide predict --method stack`.
pub struct StackPredictor {
    dim: usize,
    horizon: usize,
    members: Vec<Box<dyn OnlinePredictor + Send>>,
    forgetting: f64,
    pull: f64,
    /// Huber threshold of a sample's residual, in running residual RMS (∞: off).
    huber: f64,
    /// Running mean square of the (clipped) residual, mm².
    resid_ms: f64,
    past: Ring,
    a: DMatrix<f64>,
    b: DVector<f64>,
    w: DVector<f64>,
    scratch: Vec<f64>,
}

impl std::fmt::Debug for StackPredictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackPredictor")
            .field("members", &self.members.len())
            .field("weights", &self.w.as_slice())
            .finish()
    }
}

impl StackPredictor {
    /// Combines `members` (all for the same `dim` and horizon, at least one).
    pub fn new(
        members: Vec<Box<dyn OnlinePredictor + Send>>,
        forgetting: f64,
        pull: f64,
    ) -> Result<Self, PredictError> {
        let bad = |name, value: f64, reason| PredictError::BadParameter { name, value, reason };
        let Some(first) = members.first() else {
            return Err(bad("members", 0.0, "at least one"));
        };
        let (dim, horizon) = (first.dim(), first.horizon());
        if members.iter().any(|m| m.dim() != dim || m.horizon() != horizon) {
            return Err(bad("members", members.len() as f64, "must share dim and horizon"));
        }
        if !(forgetting > 0.0 && forgetting <= 1.0) {
            return Err(bad("forgetting", forgetting, "must be in (0, 1]"));
        }
        if !(pull > 0.0 && pull.is_finite()) {
            return Err(bad("pull", pull, "must be finite and > 0"));
        }
        let n = members.len();
        Ok(Self {
            dim,
            horizon,
            forgetting,
            pull,
            huber: f64::INFINITY,
            resid_ms: 0.0,
            past: Ring::new((n + 1) * dim, horizon + 1),
            a: DMatrix::zeros(n, n),
            b: DVector::zeros(n),
            w: DVector::repeat(n, 1.0 / n as f64),
            scratch: vec![0.0; (n + 1) * dim],
            members,
        })
    }

    /// Weights each sample's contribution to the fit down by Huber's rule: a residual of the
    /// combined forecast beyond `k` running residual RMS counts as if it were `k` RMS (a sigh
    /// all members miss then does not swing the weights). `k > 0`; ∞ (the default) is off.
    pub fn with_huber(mut self, k: f64) -> Result<Self, PredictError> {
        if k.is_nan() || k <= 0.0 {
            return Err(PredictError::BadParameter {
                name: "huber",
                value: k,
                reason: "must be > 0 (∞: off)",
            });
        }
        self.huber = k;
        Ok(self)
    }

    /// The current member weights.
    pub fn weights(&self) -> &[f64] {
        self.w.as_slice()
    }

    /// The variant with the lowest tuning-part nRMSE averaged over horizons among those tried
    /// (README): a ridge with Huber-weighted training pairs (2 residual RMS), the RLS
    /// baseline, the default analog and a 30-neighbour analog on a 3 s pattern, stacked with
    /// forgetting 0.99, a 10 % pull and Huber-weighted samples (2 residual RMS).
    pub fn selected(dim: usize, horizon: usize) -> Result<Self, PredictError> {
        let ridge = RidgeConfig {
            huber: 2.0,
            ..RidgeConfig::default()
        };
        let wide = AnalogConfig {
            neighbours: 30,
            lags: (1..=30).step_by(3).collect(),
            ..AnalogConfig::default()
        };
        let members: Vec<Box<dyn OnlinePredictor + Send>> = vec![
            Box::new(RidgePredictor::new(dim, horizon, ridge)?),
            Box::new(RlsBaseline::new(dim, horizon)?),
            Box::new(AnalogPredictor::new(dim, horizon, AnalogConfig::default())?),
            Box::new(AnalogPredictor::new(dim, horizon, wide)?),
        ];
        Self::new(members, 0.99, 0.1)?.with_huber(2.0)
    }
}

impl OnlinePredictor for StackPredictor {
    fn dim(&self) -> usize {
        self.dim
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn step(&mut self, sample: &[f64], out: &mut [f64]) {
        assert_eq!(sample.len(), self.dim);
        assert_eq!(out.len(), self.dim);
        let (dim, n) = (self.dim, self.members.len());
        let (fc, now) = self.scratch.split_at_mut(n * dim);
        for (m, chunk) in self.members.iter_mut().zip(fc.chunks_mut(dim)) {
            m.step(sample, chunk);
            // Forecast displacements: the weights then scale motion, not position.
            for (v, s) in chunk.iter_mut().zip(sample) {
                *v -= s;
            }
        }
        now.copy_from_slice(sample);
        if self.past.count > self.horizon {
            let f = self.past.get(self.horizon - 1);
            let then = &f[n * dim..];
            self.a *= self.forgetting;
            self.b *= self.forgetting;
            let mut wt = 1.0;
            if self.huber.is_finite() {
                let r2: f64 = (0..dim)
                    .map(|c| {
                        let fc: f64 = (0..n).map(|i| self.w[i] * f[i * dim + c]).sum();
                        (sample[c] - then[c] - fc).powi(2)
                    })
                    .sum();
                let lim2 = self.huber * self.huber * self.resid_ms;
                if self.resid_ms > 0.0 {
                    if r2 > lim2 {
                        wt = (lim2 / r2).sqrt();
                    }
                    self.resid_ms = 0.99 * self.resid_ms + 0.01 * r2.min(lim2);
                } else {
                    self.resid_ms = r2;
                }
            }
            for c in 0..dim {
                let target = sample[c] - then[c];
                for i in 0..n {
                    let fi = wt * f[i * dim + c];
                    self.b[i] += fi * target;
                    for j in 0..n {
                        self.a[(i, j)] += fi * f[j * dim + c];
                    }
                }
            }
            let s = self.a.trace() / n as f64;
            if s > 0.0 {
                let reg = self.pull * s;
                let mut m = self.a.clone();
                for i in 0..n {
                    m[(i, i)] += reg;
                }
                let rhs = &self.b + DVector::repeat(n, reg / n as f64);
                if let Some(w) = m.cholesky().map(|ch| ch.solve(&rhs)) {
                    self.w = w;
                }
            }
        }
        self.past.push(&self.scratch);
        for (c, o) in out.iter_mut().enumerate() {
            *o = sample[c] + (0..n).map(|i| self.w[i] * self.scratch[i * dim + c]).sum::<f64>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-coordinate breathing-like signal: a sum of two harmonics.
    fn signal(k: usize) -> [f64; 2] {
        let t = k as f64 * 0.1;
        let s = (std::f64::consts::TAU * t / 4.0).sin() + 0.3 * (std::f64::consts::TAU * t / 2.0).cos();
        [10.0 * s, -4.0 * s + 1.0]
    }

    #[test]
    fn ridge_learns_a_periodic_signal_a_second_ahead() {
        // A noiseless linear-predictable signal: after a minute the forecast 1 s ahead must be
        // far better than holding (which errs by up to the full swing).
        let h = 10;
        let mut p = RidgePredictor::new(2, h, RidgeConfig::default()).unwrap();
        let mut out = [0.0; 2];
        let mut preds = Vec::new();
        for k in 0..900 {
            p.step(&signal(k), &mut out);
            preds.push(out);
        }
        let (mut se_pred, mut se_hold) = (0.0, 0.0);
        for (k, pred) in preds.iter().enumerate().take(900 - h).skip(600) {
            let truth = signal(k + h);
            se_pred += (pred[0] - truth[0]).powi(2);
            se_hold += (signal(k)[0] - truth[0]).powi(2);
        }
        assert!(se_pred < 1e-3 * se_hold, "ridge {se_pred} vs hold {se_hold}");
    }

    #[test]
    fn rls_baseline_follows_a_ramp_exactly() {
        // On y = 2k the displacement h ahead is exactly 2h: RLS converges to it.
        let h = 3;
        let mut p = RlsBaseline::new(1, h).unwrap();
        let mut out = [0.0];
        for k in 0..400 {
            p.step(&[2.0 * k as f64], &mut out);
        }
        assert!((out[0] - 2.0 * (399 + h) as f64).abs() < 1e-3, "{}", out[0]);
    }

    #[test]
    fn refuses_bad_parameters() {
        assert!(RidgePredictor::new(0, 1, RidgeConfig::default()).is_err());
        assert!(RidgePredictor::new(3, 0, RidgeConfig::default()).is_err());
        let cfg = RidgeConfig {
            forgetting: 1.5,
            ..RidgeConfig::default()
        };
        assert!(RidgePredictor::new(3, 5, cfg).is_err());
        assert!(RlsBaseline::new(3, 0).is_err());
    }

    #[test]
    fn predictions_do_not_depend_on_later_samples() {
        // Two streams equal up to sample 300 and different after: every forecast made up to
        // 300 is identical.
        let mut a = RidgePredictor::new(2, 5, RidgeConfig::default()).unwrap();
        let mut b = a.clone();
        let (mut oa, mut ob) = ([0.0; 2], [0.0; 2]);
        for k in 0..400 {
            let s = signal(k);
            a.step(&s, &mut oa);
            let sb = if k > 300 { [s[0] + 50.0, 0.0] } else { s };
            b.step(&sb, &mut ob);
            if k <= 300 {
                assert_eq!(oa, ob, "sample {k}");
            }
        }
        assert_ne!(oa, ob);
    }

    #[test]
    fn stack_learns_to_trust_the_member_that_is_right() {
        // On y = 2k the RLS member's displacement converges to exactly 2h and holding's is 0:
        // the stack weights RLS by one and forecasts the ramp.
        let h = 4;
        let members: Vec<Box<dyn OnlinePredictor + Send>> = vec![
            Box::new(Hold::new(1, h)),
            Box::new(RlsBaseline::new(1, h).unwrap()),
        ];
        let mut p = StackPredictor::new(members, 0.99, 1e-6).unwrap();
        let mut out = [0.0];
        for k in 0..600 {
            p.step(&[2.0 * k as f64], &mut out);
        }
        assert!((out[0] - 2.0 * (599 + h) as f64).abs() < 1e-3, "{}", out[0]);
        assert!((p.weights()[1] - 1.0).abs() < 1e-3, "{:?}", p.weights());
    }

    #[test]
    fn stack_refuses_bad_members_and_parameters() {
        assert!(StackPredictor::new(vec![], 0.99, 0.1).is_err());
        let mixed: Vec<Box<dyn OnlinePredictor + Send>> =
            vec![Box::new(Hold::new(2, 3)), Box::new(Hold::new(2, 4))];
        assert!(StackPredictor::new(mixed, 0.99, 0.1).is_err());
        let one = || -> Vec<Box<dyn OnlinePredictor + Send>> { vec![Box::new(Hold::new(2, 3))] };
        assert!(StackPredictor::new(one(), 0.0, 0.1).is_err());
        assert!(StackPredictor::new(one(), 0.99, f64::NAN).is_err());
        assert!(StackPredictor::new(one(), 0.99, 0.1).is_ok());
        let huber = StackPredictor::new(one(), 0.99, 0.1).unwrap().with_huber(-1.0);
        assert!(huber.is_err());
        let cfg = RidgeConfig {
            huber: f64::NAN,
            ..RidgeConfig::default()
        };
        assert!(RidgePredictor::new(2, 3, cfg).is_err());
    }

    #[test]
    fn huber_weighting_keeps_one_wild_sample_from_bending_the_fit() {
        // A 1 m spike in one sample of a periodic signal: plain least squares learns from the
        // pairs around it for its whole memory; the Huber-weighted fit hardly does.
        let h = 5;
        let plain_cfg = RidgeConfig::default();
        let huber_cfg = RidgeConfig {
            huber: 2.0,
            ..RidgeConfig::default()
        };
        let mut plain = RidgePredictor::new(2, h, plain_cfg).unwrap();
        let mut huber = RidgePredictor::new(2, h, huber_cfg).unwrap();
        let (mut op, mut oh) = ([0.0; 2], [0.0; 2]);
        let (mut se_plain, mut se_huber) = (0.0, 0.0);
        for k in 0..900 {
            let mut s = signal(k);
            if k == 500 {
                s[0] += 1000.0;
            }
            plain.step(&s, &mut op);
            huber.step(&s, &mut oh);
            // Forecasts made once the spike has left every feature window (40 samples).
            if (600..900 - h).contains(&k) {
                let truth = signal(k + h);
                se_plain += (op[0] - truth[0]).powi(2);
                se_huber += (oh[0] - truth[0]).powi(2);
            }
        }
        assert!(se_huber < 0.01 * se_plain, "huber {se_huber} vs plain {se_plain}");
    }

    #[test]
    fn the_selected_stack_is_causal() {
        let mut a = StackPredictor::selected(2, 5).unwrap();
        let mut b = StackPredictor::selected(2, 5).unwrap();
        let (mut oa, mut ob) = ([0.0; 2], [0.0; 2]);
        for k in 0..700 {
            let s = signal(k);
            a.step(&s, &mut oa);
            let sb = if k > 650 { [s[0] - 30.0, 2.0] } else { s };
            b.step(&sb, &mut ob);
            if k <= 650 {
                assert_eq!(oa, ob, "sample {k}");
            }
        }
        assert_ne!(oa, ob);
    }
}
