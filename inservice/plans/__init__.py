"""The planning survey channel (學校本位暨教師自我專業進修規劃): plan exports from inbox/PLAN/ into the
warehouse (intake.py) and the four publications per school year (publish.py); `inservice plans` (cli.py)."""
