"""The kit's ground floor: what every stage shares and nothing else.

The label space (`labels`), the files stages exchange with their validating readers and writers
(`label_files`, `tables`, `scores`), the open-set metric (`metrics`), one-line errors (`errors`),
atomic writes (`atomic`) and stage stamps (`stamps`). It imports no stage; every stage may import it.
"""
