"""`python -m livegen.train ...`: the train command, for torchrun (`torchrun --nproc_per_node 4 -m livegen.train`)."""

import sys

from livegen.train.commands import main

sys.exit(main())
