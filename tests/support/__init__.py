"""What the tests share: helpers, fakes, recorders and real-process harnesses; no tests here."""
