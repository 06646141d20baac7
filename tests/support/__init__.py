"""What tests share and that is not a test: the NVML stand-in (the suite's only stand-in, at the
pynvml boundary), a server runner with it installed, kernel set-up code and process checks.
Tests import from here; nothing imports conftest."""
