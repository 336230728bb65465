"""The user's windows onto a running VM: the console with its escape keys and monitor
prompt, the session that runs the VM with a debugger and consoles attached, the live
web view, progress lines for long measurements."""
