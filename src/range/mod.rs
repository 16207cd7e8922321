//! Range engine: HU → relative stopping power, exact ray tracing, WEPL and range ↔ energy.
