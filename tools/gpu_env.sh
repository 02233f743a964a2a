#!/bin/bash
# Source on the GPU machine (repository root): installs the carried wheels its image lacks into /tmp/site
# (ml_collections, grain, array_record, portpicker, tensorboardX from carry/mtwheels; py3langid from carry/whl)
# and puts the repository and /tmp/site on PYTHONPATH.
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
  carry/mtwheels/ml_collections-*.whl carry/mtwheels/grain-*.whl carry/mtwheels/array_record-*.whl \
  carry/mtwheels/portpicker-*.whl carry/mtwheels/tensorboardx-*.whl carry/whl/*.whl >/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
