"""What smartprice and mu share without torch: settings, errors and the version.

- `sharedcore.about`: the installed version and how to add the `nn` extra;
- `sharedcore.errors`: `UserError`, the mistakes a user can fix (one line, exit 2), and `SettingError`;
- `sharedcore.settings`: a settings field with its reason beside it (`setting(256, "why")`);
- `sharedcore.overrides`: `--set key=value` onto a frozen preset;
- `sharedcore.describe`: the text of `presets` and `presets NAME`, read from the presets' own data.

Nothing here imports torch, pandas or either package, so both CLIs parse and describe settings on a
base install.
"""
