"""M3 against AdamW and Muon on a small ViT (NL §9.7, Fig. 11): the runner is the library's
``nestlearn optimizers`` (nestlearn/experiments/optimizers.py); this script runs it with the same arguments.

    python experiments/optimizers/vit.py --quick
"""

import sys

from nestlearn.experiments.optimizers import main

if __name__ == "__main__":
    sys.exit(main())
