"""MLMT (Mittal et al., TPAMI 2021, Sec. 3.2), the multi-label mean teacher, in one package:

- objective.py: the step (BCE on labeled images, cosine consistency between student and EMA teacher);
- labels.py: image-level labels (from the original's files or derived from label PNGs) and the
  classifier's image pipelines; views.py: the unlabeled views made on the training device;
- data.py: the split and the streams the step draws from; networks.py: student and teacher;
- validation.py: accuracy, per-class AP and the output files evaluate.py reads;
- fusion.py: how evaluate.py --with-mlmt removes absent classes from a segmentation.
"""
