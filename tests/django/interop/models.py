from django.db import models


class Order(models.Model):
    """Something that creates tasks: a task's creator is a generic foreign key
    (content type interop.order + object id)."""

    name = models.CharField(max_length=100, blank=True, default="")

    def __str__(self):
        return f"Order #{self.pk}"
