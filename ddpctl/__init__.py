"""ddpctl: Meteor's DDP served from Django models in PostgreSQL."""

__version__ = "0.1.0"
