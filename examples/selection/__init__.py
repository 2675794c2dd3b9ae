"""Which selection wins at an equal parameter budget: one protocol ([`harness`][examples.selection.harness]) run on
each domain ([`digits`][examples.selection.digits])."""
