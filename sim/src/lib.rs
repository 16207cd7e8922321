//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! Laid out by concern:
//! - [`anatomy`]: the analytic thorax phantom whose moved anatomy is rendered exactly.
//! - [`motion`]: real breathing traces read and resampled ([`motion::trace`]) and turned
//!   into tumor displacement per frame ([`motion::tumor`]).
//! - [`imaging`]: the in-room CT frames encoded as DICOM ([`imaging::frames`]) and the
//!   frame sources the replay draws from ([`imaging::sources`]).
//! - [`planning`]: a geometric ion-beam planner on the phantom.
//! - [`delivery`]: the gantry-controller simulator, the receiving end of the link
//!   (state machine + thread runner; binary `ionguide-controller`), a synchrotron's
//!   spot-by-spot delivery timeline ([`delivery::timeline`]) and respiratory gating
//!   ([`delivery::gating`]).
//! - [`scoring`]: each frame against the truth at delivery time (tumor, spot position,
//!   range) and the error histograms and quantiles.
//! - [`report`]: `report.json`, the per-frame CSV, SVG plots and an HTML summary.
//!
//! Around them: [`replay`] is the orchestration loop (frames through the real pipeline and
//! link, each scored); [`scenario`] sets up the built-in demo and replays of a user's data;
//! [`gate`] runs the release gate's workloads; [`rng`] and [`uid`] are the seeded generator
//! and deterministic UIDs every part draws from.
//!
//! Imports run one way, no cycles (each module uses only those before it):
//! `rng` ← `uid` ← `anatomy` ← `imaging` ← `planning`; `motion`, `delivery` and `scoring`
//! stand alone; `scoring` ← `report`; then `replay` (delivery, imaging, motion, scoring,
//! report) ← `scenario` ← `gate`. `grep -rn 'crate::' sim/src/<module>` checks it.

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
