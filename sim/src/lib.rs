//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! Laid out by concern:
//! - [`anatomy`]: the analytic thorax phantom whose moved anatomy is rendered exactly.
//! - [`motion`]: real breathing traces read and resampled ([`motion::trace`]), turned
//!   into tumor displacement ([`motion::tumor`]) and sampled in time ([`motion::track`]).
//! - [`imaging`]: the imaging model ([`imaging::model`]: rate, acquisition,
//!   reconstruction), the in-room CT frames encoded as DICOM ([`imaging::frames`]) and the
//!   frame sources the replay draws from ([`imaging::sources`]).
//! - [`planning`]: a geometric ion-beam planner on the phantom and on any CT with a target
//!   ROI ([`planning::ct`], the body outline in [`planning::body`]), and spot weights for a
//!   flat target dose ([`planning::optimize`]).
//! - [`delivery`]: the gantry-controller simulator, the receiving end of the link
//!   (state machine + thread runner; binary `ionguide-controller`), a synchrotron's
//!   spot-by-spot delivery timeline ([`delivery::timeline`]) and respiratory gating
//!   ([`delivery::gating`]).
//! - [`scoring`]: every spot against the truth at its own delivery time (position, range),
//!   the tracked, untracked and gated deliveries and their 4D dose
//!   ([`scoring::deliveries`]), dose figures, error histograms and quantiles.
//! - [`report`]: `report.json`, the per-frame CSV, SVG plots and an HTML summary.
//!
//! Around them: [`replay`] is the orchestration loop (frames through the real pipeline and
//! link, each scored); [`scenario`] sets up the built-in demo and replays of a user's data;
//! [`gate`] runs the release gate's workloads; [`rng`] and [`uid`] are the seeded generator
//! and deterministic UIDs every part draws from.
//!
//! Imports run one way, no cycles: `rng` ← `uid` ← `anatomy` ← `imaging`; `motion` and
//! `delivery` stand alone; `scoring` uses delivery, imaging and motion; `planning` uses
//! anatomy, imaging and scoring; `report` uses scoring, delivery, imaging and motion; then
//! `replay` ← `scenario` ← `gate`. `grep -rhoE 'crate::[a-z_]+' sim/src/<module>` checks it.

pub mod anatomy;
pub mod delivery;
pub mod gate;
pub mod imaging;
pub mod motion;
pub mod planning;
pub mod replay;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod scoring;
pub mod uid;
