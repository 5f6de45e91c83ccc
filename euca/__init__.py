"""euca: a private cloud in one Python program that speaks EC2 and S3."""
