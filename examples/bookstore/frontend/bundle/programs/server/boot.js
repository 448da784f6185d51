// Meteor's server boot: never served by ddpctl
