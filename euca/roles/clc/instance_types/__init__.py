"""Instance types: records.py owns clc_instance_types (Eucalyptus 4.x defaults, editable by admins); api.py
answers DescribeInstanceTypes.

The admin CLI (euca/cli.py) reaches the records through this package's names below, which it imported from
the module instance_types.py this package replaced.
"""

from euca.roles.clc.instance_types.records import InstanceTypeError as InstanceTypeError
from euca.roles.clc.instance_types.records import load_instance_types as load_instance_types
from euca.roles.clc.instance_types.records import modify_instance_type as modify_instance_type
