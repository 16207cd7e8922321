//! Rigid registration of an in-room frame against the planning CT.
