"""`python -m webhook` is the same CLI as the `workload-tagger` console script."""

from webhook.cli import main

raise SystemExit(main())
