//! Units, ids and small value types shared by every stage.
//!
//! A quantity that crosses a module boundary carries its unit in its type or, for vectors
//! in patient space, in its name (`_mm`). Positions and directions in patient space are
//! nalgebra `Point3<f64>` / `Vector3<f64>` in DICOM LPS millimetres.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Patient-space point in DICOM LPS, millimetres.
pub type PointMm = nalgebra::Point3<f64>;
/// Patient-space vector in DICOM LPS, millimetres (or a unit direction where named so).
pub type VectorMm = nalgebra::Vector3<f64>;

macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident, $unit:literal) => {
        $(#[$doc])*
        // `repr(transparent)`: the same layout and ABI as the bare `f64`, so converting at a
        // boundary costs nothing and a hot loop can keep working on `f64`.
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        #[repr(transparent)]
        pub struct $name(pub f64);

        impl $name {
            /// The bare number, in this type's unit.
            #[inline]
            pub const fn get(self) -> f64 {
                self.0
            }
            /// The magnitude, in this type's unit.
            #[inline]
            pub fn abs(self) -> Self {
                $name(self.0.abs())
            }
        }

        // Only same-unit sums and differences: adding a geometric length to a water-equivalent
        // one does not compile.
        impl std::ops::Add for $name {
            type Output = $name;
            #[inline]
            fn add(self, rhs: $name) -> $name {
                $name(self.0 + rhs.0)
            }
        }

        impl std::ops::Sub for $name {
            type Output = $name;
            #[inline]
            fn sub(self, rhs: $name) -> $name {
                $name(self.0 - rhs.0)
            }
        }

        impl std::ops::Neg for $name {
            type Output = $name;
            #[inline]
            fn neg(self) -> $name {
                $name(-self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if let Some(p) = f.precision() {
                    write!(f, "{:.*} {}", p, self.0, $unit)
                } else {
                    write!(f, "{} {}", self.0, $unit)
                }
            }
        }
    };
}

quantity!(
    /// A length in millimetres (geometric).
    Mm,
    "mm"
);
quantity!(
    /// A water-equivalent length in millimetres of water (WEPL, range, range offset).
    MmWe,
    "mm w.e."
);
quantity!(
    /// Kinetic energy per nucleon, MeV/u (what DICOM Nominal Beam Energy holds for ions).
    MevPerU,
    "MeV/u"
);
quantity!(
    /// An angle in degrees.
    Deg,
    "°"
);

/// Hounsfield units, as stored after rescale in a CT volume.
pub type Hu = i16;

/// A monotonic time stamp or duration in nanoseconds (from an injected clock, never wall time in logic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nanos(pub u64);

impl Nanos {
    /// From milliseconds.
    pub const fn from_ms(ms: u64) -> Self {
        Nanos(ms * 1_000_000)
    }
    /// As fractional milliseconds.
    pub fn as_ms_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

/// An ion species by atomic number Z and mass number A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ion {
    /// Atomic number (charge of the bare nucleus).
    pub z: u8,
    /// Mass number (nucleons).
    pub a: u8,
}

impl Ion {
    /// 1H, a proton.
    pub const PROTON: Ion = Ion { z: 1, a: 1 };
    /// 4He.
    pub const HELIUM4: Ion = Ion { z: 2, a: 4 };
    /// 12C.
    pub const CARBON12: Ion = Ion { z: 6, a: 12 };
    /// 16O.
    pub const OXYGEN16: Ion = Ion { z: 8, a: 16 };
    /// 20Ne.
    pub const NEON20: Ion = Ion { z: 10, a: 20 };
    /// The species ionguide supports, lightest first.
    pub const SUPPORTED: [Ion; 5] = [
        Ion::PROTON,
        Ion::HELIUM4,
        Ion::CARBON12,
        Ion::OXYGEN16,
        Ion::NEON20,
    ];

    /// Element symbol for the supported species (`"?"` for others).
    pub fn symbol(self) -> &'static str {
        match self.z {
            1 => "H",
            2 => "He",
            6 => "C",
            8 => "O",
            10 => "Ne",
            _ => "?",
        }
    }

    /// Whether ionguide has physics data for this species.
    pub fn is_supported(self) -> bool {
        Ion::SUPPORTED.contains(&self)
    }
}

impl fmt::Display for Ion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.a, self.symbol())
    }
}

/// A malformed ion name such as `"12X"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ion {0:?}: expected one of 1H (or p, proton), 4He, 12C, 16O, 20Ne")]
pub struct ParseIonError(pub String);

impl FromStr for Ion {
    type Err = ParseIonError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let ion = match t.to_ascii_lowercase().as_str() {
            "p" | "proton" | "1h" | "h" | "h1" | "h-1" => Ion::PROTON,
            "4he" | "he" | "he4" | "he-4" | "helium" | "alpha" => Ion::HELIUM4,
            "12c" | "c" | "c12" | "c-12" | "carbon" => Ion::CARBON12,
            "16o" | "o" | "o16" | "o-16" | "oxygen" => Ion::OXYGEN16,
            "20ne" | "ne" | "ne20" | "ne-20" | "neon" => Ion::NEON20,
            _ => return Err(ParseIonError(t.to_string())),
        };
        Ok(ion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ion_names_round_trip_through_display() {
        for ion in Ion::SUPPORTED {
            assert_eq!(ion.to_string().parse::<Ion>(), Ok(ion));
        }
        assert!("12X".parse::<Ion>().is_err());
    }

    #[test]
    fn quantity_display_carries_unit() {
        assert_eq!(format!("{:.1}", Mm(2.25)), "2.2 mm");
        assert_eq!(MevPerU(200.0).to_string(), "200 MeV/u");
    }

    #[test]
    fn quantities_are_layout_identical_to_f64() {
        assert_eq!(std::mem::size_of::<MmWe>(), std::mem::size_of::<f64>());
        assert_eq!(std::mem::align_of::<MmWe>(), std::mem::align_of::<f64>());
        assert_eq!(MmWe(3.0) - MmWe(5.0), MmWe(-2.0));
        assert_eq!((-MmWe(2.5)).abs(), MmWe(2.5));
    }
}
