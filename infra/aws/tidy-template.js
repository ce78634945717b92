'use strict';

// A local Serverless plugin: drops the DependsOn entries that the Framework adds although a Ref
// or Fn::GetAtt in the same resource already orders it (cfn-lint W3005). CloudFormation does not
// mind them, but emulators validate templates with cfn-lint and refuse any finding, and a
// template that lints clean keeps real findings visible.

const references = (node, name) => {
  if (Array.isArray(node)) return node.some((item) => references(item, name));
  if (!node || typeof node !== 'object') return false;
  if (node.Ref === name) return true;
  const getAtt = node['Fn::GetAtt'];
  if (Array.isArray(getAtt) && getAtt[0] === name) return true;
  if (typeof getAtt === 'string' && getAtt.split('.')[0] === name) return true;
  return Object.values(node).some((value) => references(value, name));
};

class TidyTemplate {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:package:finalize': () => this.tidy() };
  }

  tidy() {
    const template = this.serverless.service.provider.compiledCloudFormationTemplate;
    for (const resource of Object.values(template.Resources || {})) {
      if (!resource.DependsOn) continue;
      const kept = [].concat(resource.DependsOn).filter(
        (name) => !references(resource.Properties, name)
      );
      if (kept.length) resource.DependsOn = kept;
      else delete resource.DependsOn;
    }
  }
}

module.exports = TidyTemplate;
