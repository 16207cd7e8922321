//! The two spots of the worked examples: `docs/protocol.md`'s CORRECTIONS dump and the
//! hand-written vectors of `tests/link_vectors.rs` and `tests/audit_vectors.rs` (one copy
//! of the values; each test writes their bytes by hand itself).

use ionguide::correction::SpotCorrection;

/// Spot 0 at (10, −5) mm, 250 MeV/u; spot 1 at (12.5, −5) mm, 248.5 MeV/u; no range shifter.
pub fn two_spots() -> Vec<SpotCorrection> {
    vec![
        SpotCorrection {
            spot_index: 0,
            x_mm: 10.0,
            y_mm: -5.0,
            energy_mev_u: 250.0,
            range_shifter_mm_we: 0.0,
        },
        SpotCorrection {
            spot_index: 1,
            x_mm: 12.5,
            y_mm: -5.0,
            energy_mev_u: 248.5,
            range_shifter_mm_we: 0.0,
        },
    ]
}
