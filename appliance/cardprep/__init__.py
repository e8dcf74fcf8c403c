"""Card preparation on a technician's machine (provisioning/prepare-card); standard library
only, so the system python3 of any recent Linux runs it from a checkout."""
