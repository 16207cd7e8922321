"""pyRadPlan's pencil-beam dose (HongPB, matRad's generic carbon machine) on its bundled TG119
phantom, two opposed carbon beams: the peer ionguide's dose engine is timed against
(benches/dose.rs). Prints the pencil-beam count and the wall time of calc_dose_influence.

    python3 -m venv /tmp/pyrp && /tmp/pyrp/bin/pip install pyRadPlan "pydantic>=2.10,<2.12"
    /tmp/pyrp/bin/python benches/pyradplan/tg119_carbon.py
"""

import time

from pyRadPlan import IonPlan, calc_dose_influence, generate_stf, load_tg119

ct, cst = load_tg119()
pln = IonPlan(radiation_mode="carbon", machine="Generic")
pln.prop_stf = {"gantry_angles": [90.0, 270.0], "couch_angles": [0.0, 0.0], "bixel_width": 3.0}
pln.prop_dose_calc = {"engine": "HongPB"}
stf = generate_stf(ct, cst, pln)
beamlets = sum(b.total_number_of_bixels for b in stf.beams) if hasattr(stf, "beams") else None
t0 = time.perf_counter()
dij = calc_dose_influence(ct, cst, stf, pln)
dt = time.perf_counter() - t0
print(f"pyRadPlan HongPB carbon on TG119: {beamlets} pencil beams, calc_dose_influence {dt:.1f} s")
