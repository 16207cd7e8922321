//! Spool folder source (written next).
