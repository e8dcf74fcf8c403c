"""`python -m appliance`: the same as the `leat-scanner` command."""

from appliance.cli import main

raise SystemExit(main())
