"""The build pipeline and the firmware bundle it writes."""
