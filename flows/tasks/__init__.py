"""The stylize flow's tasks, one module per step: validate, transfer (the engine), records,
summary. Tasks hand each other plain data (sources, job records, encoded images)."""
